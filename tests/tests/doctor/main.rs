//! `tracer doctor` against real network-namespace "nodes" built like a Cilium node (native
//! routing, host-side `lxc…` veths, Cilium's iptables chains, pinned maps in a private bpffs,
//! a CNI cache), then broken the way the seed's incidents broke them.
//!
//! The node builder is in `node.rs`: names start with `dr`, addresses are in 10.220.0.0/16 and
//! exist only inside the namespaces, and every namespace, mount, route, process and file is
//! removed by `Node`'s Drop, which also runs when a test panics.
//! Needs root, `ip`, `iptables-nft`/`iptables-legacy`, `bpftool`, `mount`.
//! Run: `TRACER_BIN=$PWD/target/release/tracer cargo test -p integration-tests --release --test doctor -- --test-threads=1`
use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use serde_json::Value;

mod node;

use node::{Node, require_root, sh, tracer_bin};

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
    /// SIGINT, as Ctrl-C.
    fn interrupt(&self) {
        let c = self.0.as_ref().expect("already waited");
        // SAFETY: our child, not reaped yet.
        unsafe { libc::kill(libc::pid_t::try_from(c.id()).unwrap(), libc::SIGINT) };
    }

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
    let progress = node.dir.join("progress.json");
    let mut tracer = Running(Some(
        Command::new(tracer_bin())
            .args(["capture", "--quiet", "--netns", &pod, "--ready-file"])
            .arg(&ready)
            .arg("--progress-file")
            .arg(&progress)
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
    integration_tests::wait::until("the ready file", integration_tests::tracer::READY_TIMEOUT, std::time::Duration::from_millis(20), || Ok(ready.exists().then_some(())))
        .unwrap_or_else(|e| panic!("{e:#}: {}", log_text()));
    // No listener: each datagram is dropped with NO_SOCKET inside the pod's namespace.
    for _ in 0..3 {
        sh(&format!("ip netns exec {pod} bash -c 'echo drop-me > /dev/udp/127.0.0.1/{port}'"));
    }
    // Ends once it has read the three drops, however long sending them took.
    integration_tests::progress::until(&progress, "the tracer to read 3 drops", |p| p.drops >= 3 && p.caught_up()).unwrap_or_else(|e| panic!("{e:#}: {}", log_text()));
    tracer.interrupt();
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
            "html" => assert!(text().starts_with("<!DOCTYPE html>"), "{rel} is not an HTML page"),
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
