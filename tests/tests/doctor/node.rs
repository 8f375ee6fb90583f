//! The doctor tests' node: a network namespace built like a Cilium node (native routing,
//! host-side `lxc…` veths, Cilium's iptables chains, pinned maps in a private bpffs, a CNI
//! cache), which the tests then break the way the seed's incidents did. It predates the shared
//! testbed and needs what that lacks (Cilium's chains, maps and layouts), so it stays its own.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};

const RANGE: &str = "10.220.0.0/16";

pub(crate) fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer"), PathBuf::from)
}

/// Runs a shell command; panics with its output if it fails.
pub(crate) fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).stdin(Stdio::null()).output().expect("cannot run sh");
    assert!(out.status.success(), "`{cmd}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// For cleanup: runs and ignores failures.
fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh").args(["-c", cmd]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

pub(crate) fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests build network namespaces and mount a bpffs: run them as root");
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::from("hex");
    for b in bytes {
        let _ = write!(s, " {b:02x}");
    }
    s
}

fn mac_bytes(mac: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in mac.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("MAC");
    }
    m
}

pub(crate) struct Pod {
    pub(crate) ns: String,
    pub(crate) lxc: String,
    pub(crate) ip: String,
    pub(crate) ifindex: u32,
    pub(crate) lxc_mac: String,
    pub(crate) eth0_mac: String,
    pub(crate) container_id: String,
    pub(crate) lxc_id: u16,
}

/// One node: a network namespace with pods, Cilium-like iptables, pinned maps and a CNI cache.
pub(crate) struct Node {
    pub(crate) tag: String,
    pub(crate) ns: String,
    pub(crate) dir: PathBuf,
    pub(crate) net: u8,
    pub(crate) pods: Vec<Pod>,
    pub(crate) pause: Vec<Option<Child>>,
    /// Shell commands undoing what was set up, run last-first on drop.
    pub(crate) undo: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in self.pause.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for cmd in self.undo.iter().rev() {
            sh_quiet(cmd);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// A healthy node with `pods` pods. `tag` is one letter, `net` a distinct third octet.
    pub(crate) fn healthy(tag: &str, net: u8, pods: usize) -> Self {
        require_root();
        let dir = std::env::temp_dir().join(format!("dr{tag}-{}", std::process::id()));
        let mut n = Self { tag: tag.into(), ns: format!("dr{tag}node"), dir, net, pods: Vec::new(), pause: Vec::new(), undo: Vec::new() };
        n.stale_cleanup();
        std::fs::create_dir_all(n.dir.join("cni/results")).unwrap();
        std::fs::create_dir_all(n.dir.join("netns")).unwrap();
        std::fs::create_dir_all(n.dir.join("bpffs")).unwrap();
        n.undo.push(format!("ip route del blackhole {RANGE}"));
        sh_quiet(&format!("ip route add blackhole {RANGE}"));

        let ns = n.ns.clone();
        n.undo.push(format!("ip netns del {ns}"));
        sh(&format!("ip netns add {ns}"));
        let t = n.net;
        let pod_net = 100 + t;
        sh(&format!(
            "set -e; ip -n {ns} link set lo up
             ip -n {ns} link add eth0 type veth peer name eth0peer; ip -n {ns} link set eth0peer up; ip -n {ns} addr add 10.220.{t}.2/24 dev eth0; ip -n {ns} link set eth0 up
             ip -n {ns} route add default via 10.220.{t}.1
             ip -n {ns} link add cilium_host type veth peer name cilium_net
             ip -n {ns} addr add 10.220.{pod_net}.1/32 dev cilium_host
             ip -n {ns} link set cilium_host up; ip -n {ns} link set cilium_net up
             ip -n {ns} link add lxc_health type veth peer name healthpeer; ip -n {ns} link set lxc_health up
             ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0"
        ));
        for i in 0..pods {
            n.add_pod(i);
        }
        n.install_iptables();
        n.mount_bpffs();
        n.write_maps();
        for i in 0..pods {
            n.write_cni_result(i);
        }
        n
    }

    /// Removes leftovers of an earlier, killed run of the same test (same names).
    pub(crate) fn stale_cleanup(&self) {
        for e in std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == self.ns || name.starts_with(&format!("dr{}pod", self.tag)) {
                sh_quiet(&format!("ip netns del {name}"));
            }
        }
    }

    pub(crate) fn add_pod(&mut self, i: usize) {
        let (ns, tag, t) = (self.ns.clone(), self.tag.clone(), 100 + self.net);
        let pod_ns = format!("dr{tag}pod{i}");
        let lxc = format!("lxcdr{tag}{i}");
        let ip = format!("10.220.{t}.{}", 10 + i);
        self.undo.push(format!("ip netns del {pod_ns}"));
        sh(&format!(
            "set -e; ip netns add {pod_ns}; ip -n {pod_ns} link set lo up
             ip -n {ns} link add {lxc} type veth peer name eth0 netns {pod_ns}
             ip -n {pod_ns} addr add {ip}/32 dev eth0; ip -n {pod_ns} link set eth0 up
             ip -n {ns} link set {lxc} up; ip -n {ns} route add {ip}/32 dev {lxc}"
        ));
        let link = |netns: &str, dev: &str| -> Value {
            let out = sh(&format!("ip -n {netns} -j link show dev {dev}"));
            serde_json::from_str::<Value>(&out).unwrap()[0].clone()
        };
        let host = link(&ns, &lxc);
        let peer = link(&pod_ns, "eth0");
        // The pod's "pause container": a process keeping its namespace in use.
        let pause = Command::new("ip").args(["netns", "exec", &pod_ns, "sleep", "600"]).stdin(Stdio::null()).spawn().unwrap();
        self.pause.push(Some(pause));
        // The runtime's view: a cni-… name under the netns dir, bound to the pod's namespace.
        let f = self.dir.join(format!("netns/cni-{pod_ns}"));
        std::fs::write(&f, b"").unwrap();
        self.undo.push(format!("umount {}", f.display()));
        sh(&format!("mount --bind /var/run/netns/{pod_ns} {}", f.display()));
        self.pods.push(Pod {
            ns: pod_ns,
            lxc,
            ip,
            ifindex: u32::try_from(host["ifindex"].as_u64().unwrap()).unwrap(),
            lxc_mac: host["address"].as_str().unwrap().to_string(),
            eth0_mac: peer["address"].as_str().unwrap().to_string(),
            container_id: format!("{:0>64}", format!("dr{tag}{i}")),
            lxc_id: 1000 + u16::try_from(i).unwrap(),
        });
    }

    /// Cilium 1.16's chains and feeder rules (`pkg/datapath/iptables`), its `CILIUM_FORWARD`
    /// accept rules, a few kube-proxy hooks, and a Docker-style `FORWARD DROP` policy.
    pub(crate) fn install_iptables(&self) {
        let mut r = String::new();
        let feeder = |hook: &str, chain: &str| format!("-A {hook} -m comment --comment \"cilium-feeder: {chain}\" -j {chain}\n");
        r += "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:CILIUM_OUTPUT_raw - [0:0]\n:CILIUM_PRE_raw - [0:0]\n";
        r += &feeder("PREROUTING", "CILIUM_PRE_raw");
        r += &feeder("OUTPUT", "CILIUM_OUTPUT_raw");
        r += "COMMIT\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:CILIUM_POST_mangle - [0:0]\n:CILIUM_PRE_mangle - [0:0]\n";
        r += &feeder("PREROUTING", "CILIUM_PRE_mangle");
        r += &feeder("POSTROUTING", "CILIUM_POST_mangle");
        r += "COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:CILIUM_OUTPUT_nat - [0:0]\n:CILIUM_POST_nat - [0:0]\n:CILIUM_PRE_nat - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-PROXY-CANARY - [0:0]\n";
        r += &feeder("PREROUTING", "CILIUM_PRE_nat");
        r += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
        r += &feeder("OUTPUT", "CILIUM_OUTPUT_nat");
        r += "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
        r += &feeder("POSTROUTING", "CILIUM_POST_nat");
        r += "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n";
        r += "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n";
        r += "COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:CILIUM_FORWARD - [0:0]\n:CILIUM_INPUT - [0:0]\n:CILIUM_OUTPUT - [0:0]\n:KUBE-FORWARD - [0:0]\n";
        r += &feeder("INPUT", "CILIUM_INPUT");
        r += &feeder("FORWARD", "CILIUM_FORWARD");
        r += "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n";
        r += &feeder("OUTPUT", "CILIUM_OUTPUT");
        for (dir, dev, what) in [
            ("-o", "cilium_host", "any->cluster on cilium_host forward accept"),
            ("-i", "cilium_host", "cluster->any on cilium_host forward accept (nodeport)"),
            ("-i", "lxc+", "cluster->any on lxc+ forward accept"),
            ("-i", "cilium_net", "cluster->any on cilium_net forward accept (nodeport)"),
            ("-o", "lxc+", "any->cluster on lxc+ forward accept"),
        ] {
            let _ = writeln!(r, "-A CILIUM_FORWARD {dir} {dev} -m comment --comment \"cilium: {what}\" -j ACCEPT");
        }
        r += "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n";
        let file = self.dir.join("rules.v4");
        std::fs::write(&file, r).unwrap();
        sh(&format!("ip netns exec {} iptables-nft-restore < {}", self.ns, file.display()));
    }

    pub(crate) fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    pub(crate) fn globals(&self) -> PathBuf {
        self.bpffs().join("tc/globals")
    }

    pub(crate) fn mount_bpffs(&mut self) {
        let b = self.bpffs();
        self.undo.push(format!("umount {}", b.display()));
        sh(&format!("mount -t bpf bpf {}", b.display()));
        std::fs::create_dir_all(self.globals()).unwrap();
    }

    /// `struct endpoint_key` (Cilium 1.16 bpf/lib/common.h): IPv4 in the first 4 of 16 address
    /// bytes, family 1 at byte 16.
    pub(crate) fn endpoint_key(ip: &str) -> [u8; 20] {
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
        k[16] = 1;
        k
    }

    /// `struct endpoint_info` (Cilium 1.16 bpf/lib/common.h, 48 bytes, host byte order).
    pub(crate) fn endpoint_info(ifindex: u32, lxc_id: u16, flags: u32, pod_mac: [u8; 6], lxc_mac: [u8; 6], sec_id: u32) -> [u8; 48] {
        let mut v = [0u8; 48];
        v[..4].copy_from_slice(&ifindex.to_ne_bytes());
        v[6..8].copy_from_slice(&lxc_id.to_ne_bytes());
        v[8..12].copy_from_slice(&flags.to_ne_bytes());
        v[16..22].copy_from_slice(&pod_mac);
        v[24..30].copy_from_slice(&lxc_mac);
        v[32..36].copy_from_slice(&sec_id.to_ne_bytes());
        v
    }

    /// `struct ipcache_key` (Cilium 1.16 bpf/lib/maps.h): LPM prefix length counting from
    /// byte 4 (32 bits of `cluster_id`/pad/family before the address), family 1 at byte 7.
    pub(crate) fn ipcache_key(ip: &str, len: u32) -> [u8; 24] {
        let mut k = [0u8; 24];
        k[..4].copy_from_slice(&(32 + len).to_ne_bytes());
        k[7] = 1;
        k[8..12].copy_from_slice(&ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
        k
    }

    /// `struct remote_endpoint_info` (12 bytes): identity, IPv4 tunnel endpoint.
    pub(crate) fn ipcache_value(identity: u32, tunnel: Option<&str>) -> [u8; 12] {
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&identity.to_ne_bytes());
        if let Some(t) = tunnel {
            v[4..8].copy_from_slice(&t.parse::<std::net::Ipv4Addr>().unwrap().octets());
        }
        v
    }

    pub(crate) fn write_maps(&self) {
        let g = self.globals();
        let lxc = g.join("cilium_lxc");
        let ipc = g.join("cilium_ipcache");
        sh(&format!("bpftool map create {} type hash key 20 value 48 entries 65535 name cilium_lxc", lxc.display()));
        sh(&format!("bpftool map create {} type lpm_trie key 24 value 12 entries 512000 name cilium_ipcache flags 1", ipc.display()));
        let upd = |map: &Path, k: &[u8], v: &[u8]| sh(&format!("bpftool map update pinned {} key {} value {}", map.display(), hex(k), hex(v)));
        // The node's own IP: a host entry (ENDPOINT_F_HOST), as the agent writes it.
        let node_ip = format!("10.220.{}.2", self.net);
        upd(&lxc, &Self::endpoint_key(&node_ip), &Self::endpoint_info(0, 0, 1, [0; 6], [0; 6], 0));
        upd(&ipc, &Self::ipcache_key(&node_ip, 32), &Self::ipcache_value(1, None));
        upd(&ipc, &Self::ipcache_key("0.0.0.0", 0), &Self::ipcache_value(2, None));
        // A pod on another node: behind a tunnel endpoint, not ours to check.
        upd(&ipc, &Self::ipcache_key(&format!("10.220.{}.77", 200 + self.net), 32), &Self::ipcache_value(40000, Some("10.220.250.3")));
        // Cilium's health endpoint: a real endpoint on lxc_health, reserved identity 4, and no
        // CNI result (the agent sets it up itself).
        let health: Value = serde_json::from_str::<Value>(&sh(&format!("ip -n {} -j link show dev lxc_health", self.ns))).unwrap()[0].clone();
        let health_ip = format!("10.220.{}.2", 100 + self.net);
        let health_ifindex = u32::try_from(health["ifindex"].as_u64().unwrap()).unwrap();
        upd(&lxc, &Self::endpoint_key(&health_ip), &Self::endpoint_info(health_ifindex, 999, 0, [0x0a, 0, 0, 0, 0, 2], mac_bytes(health["address"].as_str().unwrap()), 4));
        upd(&ipc, &Self::ipcache_key(&health_ip, 32), &Self::ipcache_value(4, None));
        for p in &self.pods {
            upd(&lxc, &Self::endpoint_key(&p.ip), &Self::endpoint_info(p.ifindex, p.lxc_id, 0, mac_bytes(&p.eth0_mac), mac_bytes(&p.lxc_mac), 50000 + u32::from(p.lxc_id)));
            upd(&ipc, &Self::ipcache_key(&p.ip, 32), &Self::ipcache_value(50000 + u32::from(p.lxc_id), None));
        }
    }

    pub(crate) fn cni_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("cni/results/cilium-{}-eth0", self.pods[i].container_id))
    }

    /// libcni's cache entry for pod `i`, as Cilium's plugin returns it (host veth, then eth0).
    pub(crate) fn write_cni_result(&self, i: usize) {
        let p = &self.pods[i];
        let v = json!({
            "kind": "cniCacheV1",
            "containerId": p.container_id,
            "config": "",
            "ifName": "eth0",
            "networkName": "cilium",
            "cniArgs": [["K8S_POD_NAMESPACE", "drtest"], ["K8S_POD_NAME", format!("pod-{i}")]],
            "result": {
                "cniVersion": "0.3.1",
                "interfaces": [
                    {"name": p.lxc, "mac": p.lxc_mac},
                    {"name": "eth0", "mac": p.eth0_mac, "sandbox": format!("/var/run/netns/cni-{}", p.ns)}
                ],
                "ips": [{"address": format!("{}/32", p.ip), "interface": 1}]
            }
        });
        std::fs::write(self.cni_file(i), v.to_string()).unwrap();
    }

    pub(crate) fn doctor_cmd(&self, json: bool) -> Command {
        let mut c = Command::new(tracer_bin());
        c.arg("doctor");
        if json {
            c.arg("--json");
        }
        c.arg("--netns")
            .arg(&self.ns)
            .arg("--bpffs")
            .arg(self.bpffs())
            .arg("--cni-cache-dir")
            .arg(self.dir.join("cni"))
            .arg("--netns-dir")
            .arg(self.dir.join("netns"));
        c
    }

    /// Runs `tracer doctor --json` on this node: (exit code, report).
    pub(crate) fn doctor(&self) -> (i32, Value) {
        let out = self.doctor_cmd(true).output().expect("cannot run tracer (set TRACER_BIN)");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("--json output does not parse ({e}):\n{text}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().expect("killed by a signal"), v)
    }

    pub(crate) fn doctor_table(&self) -> (i32, String) {
        let out = self.doctor_cmd(false).output().expect("cannot run tracer");
        (out.status.code().expect("killed by a signal"), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn kill_pause(&mut self, i: usize) {
        if let Some(mut c) = self.pause[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
