//! `tracer doctor` against real network-namespace "nodes" built like a Cilium node (native
//! routing, host-side `lxc…` veths, Cilium's iptables chains, pinned maps in a private bpffs,
//! a CNI cache), then broken the way the seed's incidents broke them.
//!
//! Self-contained on purpose (no shared testbed library yet): names start with `dr`, addresses
//! are in 10.220.0.0/16 and exist only inside the namespaces, and every namespace, mount, route,
//! process and file is removed by `Node`'s Drop, which also runs when a test panics.
//! Needs root, `ip`, `iptables-nft`/`iptables-legacy`, `bpftool`, `mount`.
//! Run: `TRACER_BIN=$PWD/target/release/tracer cargo test -p integration-tests --release --test doctor -- --test-threads=1`
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};

const RANGE: &str = "10.220.0.0/16";

fn tracer_bin() -> PathBuf {
    std::env::var_os("TRACER_BIN").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer"), PathBuf::from)
}

/// Runs a shell command; panics with its output if it fails.
fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).stdin(Stdio::null()).output().expect("cannot run sh");
    assert!(out.status.success(), "`{cmd}` failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// For cleanup: runs and ignores failures.
fn sh_quiet(cmd: &str) {
    let _ = Command::new("sh").args(["-c", cmd]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn require_root() {
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

struct Pod {
    ns: String,
    lxc: String,
    ip: String,
    ifindex: u32,
    lxc_mac: String,
    eth0_mac: String,
    container_id: String,
    lxc_id: u16,
}

/// One node: a network namespace with pods, Cilium-like iptables, pinned maps and a CNI cache.
struct Node {
    tag: String,
    ns: String,
    dir: PathBuf,
    net: u8,
    pods: Vec<Pod>,
    pause: Vec<Option<Child>>,
    /// Shell commands undoing what was set up, run last-first on drop.
    undo: Vec<String>,
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
    fn healthy(tag: &str, net: u8, pods: usize) -> Self {
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
    fn stale_cleanup(&self) {
        for e in std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == self.ns || name.starts_with(&format!("dr{}pod", self.tag)) {
                sh_quiet(&format!("ip netns del {name}"));
            }
        }
    }

    fn add_pod(&mut self, i: usize) {
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
    fn install_iptables(&self) {
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

    fn bpffs(&self) -> PathBuf {
        self.dir.join("bpffs")
    }

    fn globals(&self) -> PathBuf {
        self.bpffs().join("tc/globals")
    }

    fn mount_bpffs(&mut self) {
        let b = self.bpffs();
        self.undo.push(format!("umount {}", b.display()));
        sh(&format!("mount -t bpf bpf {}", b.display()));
        std::fs::create_dir_all(self.globals()).unwrap();
    }

    /// `struct endpoint_key` (Cilium 1.16 bpf/lib/common.h): IPv4 in the first 4 of 16 address
    /// bytes, family 1 at byte 16.
    fn endpoint_key(ip: &str) -> [u8; 20] {
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
        k[16] = 1;
        k
    }

    /// `struct endpoint_info` (Cilium 1.16 bpf/lib/common.h, 48 bytes, host byte order).
    fn endpoint_info(ifindex: u32, lxc_id: u16, flags: u32, pod_mac: [u8; 6], lxc_mac: [u8; 6], sec_id: u32) -> [u8; 48] {
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
    fn ipcache_key(ip: &str, len: u32) -> [u8; 24] {
        let mut k = [0u8; 24];
        k[..4].copy_from_slice(&(32 + len).to_ne_bytes());
        k[7] = 1;
        k[8..12].copy_from_slice(&ip.parse::<std::net::Ipv4Addr>().unwrap().octets());
        k
    }

    /// `struct remote_endpoint_info` (12 bytes): identity, IPv4 tunnel endpoint.
    fn ipcache_value(identity: u32, tunnel: Option<&str>) -> [u8; 12] {
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&identity.to_ne_bytes());
        if let Some(t) = tunnel {
            v[4..8].copy_from_slice(&t.parse::<std::net::Ipv4Addr>().unwrap().octets());
        }
        v
    }

    fn write_maps(&self) {
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

    fn cni_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("cni/results/cilium-{}-eth0", self.pods[i].container_id))
    }

    /// libcni's cache entry for pod `i`, as Cilium's plugin returns it (host veth, then eth0).
    fn write_cni_result(&self, i: usize) {
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

    fn doctor_cmd(&self, json: bool) -> Command {
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
    fn doctor(&self) -> (i32, Value) {
        let out = self.doctor_cmd(true).output().expect("cannot run tracer (set TRACER_BIN)");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("--json output does not parse ({e}):\n{text}\nstderr: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().expect("killed by a signal"), v)
    }

    fn doctor_table(&self) -> (i32, String) {
        let out = self.doctor_cmd(false).output().expect("cannot run tracer");
        (out.status.code().expect("killed by a signal"), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn kill_pause(&mut self, i: usize) {
        if let Some(mut c) = self.pause[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn finding<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["findings"].as_array().unwrap().iter().find(|f| f["id"] == id).unwrap_or_else(|| panic!("no finding {id} in:\n{report:#}"))
}

fn ids(report: &Value) -> Vec<String> {
    let mut v: Vec<String> = report["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn check_status<'a>(report: &'a Value, check: &str) -> &'a str {
    report["checks"].as_array().unwrap().iter().find(|c| c["check"] == check).and_then(|c| c["status"].as_str()).unwrap_or_else(|| panic!("no check {check} in:\n{report:#}"))
}

fn evidence(f: &Value) -> String {
    f["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect::<Vec<_>>().join("\n")
}

/// Every finding carries the contract's fields.
fn assert_well_formed(report: &Value) {
    for f in report["findings"].as_array().unwrap() {
        for k in ["id", "severity", "action", "summary"] {
            assert!(f[k].as_str().is_some_and(|s| !s.is_empty()), "finding without {k}: {f:#}");
        }
        assert!(["critical", "warning"].contains(&f["severity"].as_str().unwrap()), "{f:#}");
        assert!(!f["evidence"].as_array().unwrap().is_empty(), "finding without evidence: {f:#}");
    }
}

fn btf_has(word: &str) -> bool {
    sh("bpftool btf dump file /sys/kernel/btf/vmlinux format raw").lines().any(|l| l.contains(&format!("'{word}'")))
}

#[test]
fn healthy_node_has_no_findings() {
    let node = Node::healthy("h", 1, 2);
    let (code, r) = node.doctor();
    assert_eq!(ids(&r), Vec::<String>::new(), "a healthy node must have no findings:\n{r:#}");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["status"], "healthy");
    // The checks really ran against the node's state (not skipped for lack of it).
    for c in ["netfilter.cilium", "netfilter.kube-proxy", "netfilter.forward", "cilium.endpoints", "cilium.ipcache", "host.forwarding", "host.rp-filter", "host.pod-interfaces", "host.netns"] {
        assert_eq!(check_status(&r, c), "ok", "{c} in:\n{r:#}");
    }
    let detail = r["checks"].as_array().unwrap().iter().find(|c| c["check"] == "cilium.endpoints").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.starts_with("4 endpoint entries (3 endpoints, 1 host IPs)"), "{detail}");

    // Hook support, checked against what the kernel itself declares.
    let hooks: Vec<(String, String)> = r["kernel"]["hooks"].as_array().unwrap().iter().map(|h| (h["hook"].as_str().unwrap().to_string(), h["support"].as_str().unwrap().to_string())).collect();
    let support = |h: &str| hooks.iter().find(|(n, _)| n == h).map_or_else(|| panic!("no hook {h}"), |(_, s)| s.clone());
    assert_eq!(hooks.len(), 7);
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        assert_eq!(support("kprobe"), "no", "no kprobe PMU on this kernel");
    }
    assert_eq!(support("tcx") == "yes", btf_has("BPF_TCX_INGRESS"), "tcx support must follow the kernel's attach types");
    assert_eq!(support("netfilter") == "yes", btf_has("BPF_NETFILTER"), "netfilter link support must follow the kernel's attach types");
    assert_eq!(support("tp_btf") == "yes", btf_has("btf_trace_kfree_skb"));
    assert_eq!(support("raw_tp"), "yes");
    assert!(r["kernel"]["drop_reasons"].as_u64().unwrap() > 10);

    let (code, table) = node.doctor_table();
    assert_eq!(code, 0);
    assert!(table.contains("No findings.") && table.contains("HOOK") && table.contains("cilium.endpoints"), "{table}");
}

/// Incident 1: a `NetworkManager` restart removed the jumps into Cilium's chains (and one of
/// kube-proxy's); the chains themselves are still there.
#[test]
fn incident1_unhooked_cilium_chains() {
    let node = Node::healthy("a", 2, 1);
    let (code, r) = node.doctor();
    assert_eq!((code, ids(&r)), (0, vec![]), "fixture must start healthy:\n{r:#}");

    for (table, hook, chain) in [
        ("raw", "PREROUTING", "CILIUM_PRE_raw"),
        ("raw", "OUTPUT", "CILIUM_OUTPUT_raw"),
        ("mangle", "PREROUTING", "CILIUM_PRE_mangle"),
        ("mangle", "POSTROUTING", "CILIUM_POST_mangle"),
        ("nat", "PREROUTING", "CILIUM_PRE_nat"),
        ("nat", "OUTPUT", "CILIUM_OUTPUT_nat"),
        ("nat", "POSTROUTING", "CILIUM_POST_nat"),
        ("filter", "INPUT", "CILIUM_INPUT"),
        ("filter", "FORWARD", "CILIUM_FORWARD"),
        ("filter", "OUTPUT", "CILIUM_OUTPUT"),
    ] {
        sh(&format!("ip netns exec {} iptables-nft -t {table} -D {hook} -m comment --comment 'cilium-feeder: {chain}' -j {chain}", node.ns));
    }
    sh(&format!("ip netns exec {} iptables-nft -t nat -D PREROUTING -m comment --comment 'kubernetes service portals' -j KUBE-SERVICES", node.ns));

    let (code, r) = node.doctor();
    assert_well_formed(&r);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(ids(&r), vec!["netfilter.cilium-chain-unhooked", "netfilter.forward-drops-pods", "netfilter.kube-chain-unhooked"], "{r:#}");
    let f = finding(&r, "netfilter.cilium-chain-unhooked");
    assert_eq!(f["severity"], "critical");
    assert_eq!(f["count"], 10);
    let ev = evidence(f);
    assert!(ev.contains("iptables-nft filter: CILIUM_FORWARD (5 rules) is not jumped to from FORWARD"), "{ev}");
    assert!(ev.contains("cilium-feeder: CILIUM_PRE_nat"), "{ev}");
    let fwd = evidence(finding(&r, "netfilter.forward-drops-pods"));
    assert!(fwd.contains("policy DROP of FORWARD") && fwd.contains("CILIUM_FORWARD, which would accept it, is not jumped to"), "{fwd}");
    assert!(fwd.contains(&node.pods[0].ip) && fwd.contains(&node.pods[0].lxc), "{fwd}");
    let kube = evidence(finding(&r, "netfilter.kube-chain-unhooked"));
    assert!(kube.contains("KUBE-SERVICES is not jumped to from PREROUTING"), "{kube}");

    let (code, table) = node.doctor_table();
    eprintln!("{table}");
    assert_eq!(code, 1);
    assert!(table.contains("CRITICAL  netfilter.cilium-chain-unhooked") && table.contains("action:"), "{table}");

    // A firewall reload that flushes and deletes every chain: Cilium's datapath (cilium_host,
    // pinned maps) is still there, its chains are not.
    for table in ["raw", "mangle", "nat", "filter"] {
        sh(&format!("ip netns exec {} sh -c 'iptables-nft -t {table} -F && iptables-nft -t {table} -X'", node.ns));
    }
    let (code, r) = node.doctor();
    assert_well_formed(&r);
    assert_eq!((code, ids(&r)), (1, vec!["netfilter.cilium-chain-missing".to_string(), "netfilter.forward-drops-pods".to_string()]), "{r:#}");
    let ev = evidence(finding(&r, "netfilter.cilium-chain-missing"));
    assert!(ev.contains("Cilium's datapath is present (cilium_host device and pinned maps"), "{ev}");
    assert_eq!(check_status(&r, "netfilter.kube-proxy"), "skipped");
}

/// Incident 2: Cilium's pinned state outlives pods. Pod 1 is gone (interface, process, CNI
/// result) but its endpoint and ipcache entries and its namespace stay; pod 2's interface was
/// deleted without CNI DEL and a new `lxc` device took its ifindex.
#[test]
fn incident2_stale_cilium_state() {
    let mut node = Node::healthy("b", 3, 3);
    let (code, r) = node.doctor();
    assert_eq!((code, ids(&r)), (0, vec![]), "fixture must start healthy:\n{r:#}");

    sh(&format!("ip -n {} link del {}", node.ns, node.pods[1].lxc));
    node.kill_pause(1);
    std::fs::remove_file(node.cni_file(1)).unwrap();

    let reused = node.pods[2].ifindex;
    sh(&format!("ip -n {} link del {}", node.ns, node.pods[2].lxc));
    sh(&format!("ip -n {} link add lxcdrb9 index {reused} address 02:dd:00:00:00:09 type veth peer name drb9peer", node.ns));

    let (code, r) = node.doctor();
    assert_well_formed(&r);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(
        ids(&r),
        vec!["cilium.endpoint-stale", "cilium.ipcache-unknown-pod", "cilium.lxc-without-endpoint", "host.cni-result-stale", "host.lxc-without-pod", "host.netns-leftover"],
        "{r:#}"
    );
    let stale = finding(&r, "cilium.endpoint-stale");
    assert_eq!((stale["severity"].as_str(), stale["count"].as_u64()), (Some("critical"), Some(2)));
    let ev = evidence(stale);
    let gone = &node.pods[1];
    assert!(ev.contains(&format!("{} → ifindex {}", gone.ip, gone.ifindex)) && ev.contains(&format!("no interface has ifindex {} any more", gone.ifindex)), "{ev}");
    assert!(ev.contains(&format!("{} → ifindex {reused}", node.pods[2].ip)) && ev.contains("is now lxcdrb9 with MAC 02:dd:00:00:00:09"), "{ev}");
    assert!(!ev.contains(&node.pods[0].ip), "the healthy pod is not stale: {ev}");
    assert!(evidence(finding(&r, "cilium.ipcache-unknown-pod")).contains(&format!("{}/32", gone.ip)));
    assert!(evidence(finding(&r, "cilium.lxc-without-endpoint")).contains("lxcdrb9"));
    assert!(evidence(finding(&r, "host.netns-leftover")).contains(&format!("cni-{}", gone.ns)));
    assert!(evidence(finding(&r, "host.cni-result-stale")).contains(&node.pods[2].lxc));
    assert!(evidence(finding(&r, "host.lxc-without-pod")).contains("lxcdrb9"));

    let (code, table) = node.doctor_table();
    eprintln!("{table}");
    assert_eq!(code, 1);
    assert!(table.contains("CRITICAL  cilium.endpoint-stale"), "{table}");
}

/// A map whose layout tracer does not know is refused, and the run says it could not check.
#[test]
fn unknown_map_layout_is_refused() {
    let node = Node::healthy("c", 4, 1);
    let lxc = node.globals().join("cilium_lxc");
    std::fs::remove_file(&lxc).unwrap();
    sh(&format!("bpftool map create {} type hash key 20 value 56 entries 1024 name cilium_lxc", lxc.display()));
    let (code, r) = node.doctor();
    assert_eq!(ids(&r), Vec::<String>::new(), "{r:#}");
    assert_eq!(code, 2, "{r:#}");
    assert_eq!(r["status"], "incomplete");
    assert_eq!(check_status(&r, "cilium.endpoints"), "error");
    let detail = r["checks"].as_array().unwrap().iter().find(|c| c["check"] == "cilium.endpoints").unwrap()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("unknown layout") && detail.contains("value 56 B"), "{detail}");
}

/// Rules in both iptables back ends of the same namespace.
#[test]
fn legacy_and_nft_rules_together() {
    let node = Node::healthy("d", 5, 1);
    sh(&format!("ip netns exec {} iptables-legacy -A INPUT -s 10.220.5.99/32 -j DROP", node.ns));
    let (code, r) = node.doctor();
    assert_well_formed(&r);
    assert_eq!((code, ids(&r)), (1, vec!["netfilter.legacy-and-nft".to_string()]), "{r:#}");
    let ev = evidence(finding(&r, "netfilter.legacy-and-nft"));
    assert!(ev.contains("iptables-legacy: 1 rules in tables filter") && ev.contains("iptables-nft:"), "{ev}");
}

/// A child process killed (and reaped) if the test fails before it ends.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Running {
    /// Waits at most `secs` for the process to exit; its status code.
    fn wait(&mut self, secs: u64) -> i32 {
        let c = self.0.as_mut().expect("already waited");
        for _ in 0..secs * 10 {
            if let Some(s) = c.try_wait().unwrap() {
                self.0 = None;
                return s.code().expect("killed by a signal");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("tracer did not exit within {secs}s");
    }
}

/// The iptables-save grammar, line by line (comments, tables, chains, rules, COMMIT).
fn looks_like_iptables_save(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l.starts_with('*') || l.starts_with(':') || l == "COMMIT" || l.starts_with("-A ") || (l.starts_with('[') && l.contains("] -A "))
    })
}

/// `tracer capture --bundle`: the archive unpacks with the system tar, lists exactly what
/// MANIFEST.json says, and every file parses as the format the manifest gives it.
#[test]
fn bundle_archive_unpacks_and_every_file_parses() {
    let node = Node::healthy("e", 6, 1);
    let pod = node.pods[0].ns.clone();
    let bundle = node.dir.join("incident-e");
    let ready = node.dir.join("ready");
    let port = 39226;
    let log = node.dir.join("tracer.err");
    let mut tracer = Running(Some(
        Command::new(tracer_bin())
            .args(["capture", "--duration", "6s", "--quiet", "--netns", &pod, "--ready-file"])
            .arg(&ready)
            .arg("--bundle")
            .arg(&bundle)
            .args(["udp", "port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    for _ in 0..200 {
        if ready.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ready.exists(), "tracer never became ready: {}", log_text());
    // No listener: each datagram is dropped with NO_SOCKET inside the pod's namespace.
    for _ in 0..3 {
        sh(&format!("ip netns exec {pod} bash -c 'echo drop-me > /dev/udp/127.0.0.1/{port}'"));
    }
    assert_eq!(tracer.wait(60), 0, "capture with --bundle failed: {}", log_text());
    assert!(log_text().contains("tracer: bundle in"), "{}", log_text());

    let archive = node.dir.join("incident-e.tar.zst");
    let out = node.dir.join("unpacked");
    std::fs::create_dir_all(&out).unwrap();
    sh(&format!("tar --zstd -xf {} -C {}", archive.display(), out.display()));
    let root = out.join("incident-e");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(root.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["bundle_version"], 1);
    let files = manifest["files"].as_array().unwrap();

    let mut listed: Vec<String> = files.iter().map(|f| f["path"].as_str().unwrap().to_string()).collect();
    listed.push("MANIFEST.json".into());
    listed.sort();
    let mut packed: Vec<String> = sh(&format!("cd {} && find . -type f | sed 's|^./||'", root.display())).lines().map(str::to_string).collect();
    packed.sort();
    assert_eq!(packed, listed, "the archive holds exactly the files MANIFEST.json lists");

    for f in files {
        let rel = f["path"].as_str().unwrap();
        let path = root.join(rel);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap(), "{rel}: size differs from MANIFEST.json");
        let text = || String::from_utf8(bytes.clone()).unwrap_or_else(|_| panic!("{rel} is not UTF-8"));
        match f["format"].as_str().unwrap() {
            "json" => {
                serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"));
            }
            "jsonl" => {
                for line in text().lines() {
                    serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{rel}: a line is not JSON: {e}"));
                }
            }
            "iptables-save" => assert!(looks_like_iptables_save(&text()), "{rel} is not iptables-save output"),
            "pcapng" => {
                let ports = sh(&format!("tshark -r {} -T fields -e udp.dstport", path.display()));
                assert_eq!(ports.lines().collect::<Vec<_>>(), vec![port.to_string(); 3], "{rel}: the three dropped datagrams");
            }
            "text" => assert!(!text().is_empty(), "{rel} is empty"),
            other => panic!("{rel}: unknown format {other}"),
        }
    }
    for phase in ["start", "end"] {
        for rel in [
            "netfilter/iptables-nft-v4.txt",
            "netfilter/iptables-legacy-v4.txt",
            "netfilter/nft.json",
            "ip/root/link.json",
            "ip/root/addr.json",
            "ip/root/route4.json",
            "ip/root/rule4.json",
            "ip/root/neigh.json",
            "sysctls.json",
            "conntrack/stat.txt",
            "doctor.json",
        ] {
            assert!(listed.contains(&format!("{phase}/{rel}")), "missing {phase}/{rel}");
        }
        // The pods' namespaces too.
        let link: Value = serde_json::from_str(&std::fs::read_to_string(root.join(format!("{phase}/ip/netns/{}/link.json", node.ns))).unwrap()).unwrap();
        assert!(link.as_array().unwrap().iter().any(|l| l["ifname"] == node.pods[0].lxc), "{phase}: the node namespace's lxc interface");
        let doctor: Value = serde_json::from_str(&std::fs::read_to_string(root.join(format!("{phase}/doctor.json"))).unwrap()).unwrap();
        assert!(doctor["findings"].is_array() && doctor["kernel"]["hooks"].is_array());
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(root.join("capture/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["drops"], 3);
    let probes: Value = serde_json::from_str(&std::fs::read_to_string(root.join("probes.json")).unwrap()).unwrap();
    assert!(["tp_btf", "raw_tp"].contains(&probes["kfree_skb"].as_str().unwrap()));
    let versions: Value = serde_json::from_str(&std::fs::read_to_string(root.join("versions.json")).unwrap()).unwrap();
    assert!(versions["kernel_release"].as_str().is_some_and(|k| !k.is_empty()));
}

/// A non-empty bundle directory is refused before anything is captured or written.
#[test]
fn bundle_refuses_a_non_empty_directory() {
    require_root();
    let dir = std::env::temp_dir().join(format!("drf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("b/notes.txt"), "mine").unwrap();
    let out = Command::new(tracer_bin()).args(["capture", "--duration", "1s", "--bundle"]).arg(dir.join("b")).output().unwrap();
    let listing = sh(&format!("cd {} && find . | sort", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty") && err.lines().count() == 1, "{err}");
    assert_eq!(listing, ".\n./b\n./b/notes.txt\n", "nothing written");
}
