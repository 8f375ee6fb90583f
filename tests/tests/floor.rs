//! `tracer floor`, the empty program of the bench's floor arms (`cargo xtask bench`): attached
//! where it is told, run once per event there (the kernel's own run count), gone with the
//! process; an unknown tracepoint refused in one line. Needs root.
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use integration_tests::{Node, TempDir, Tracer, kernel::bpftool, wait};

const TIMEOUT: Duration = Duration::from_mins(1);
const PROG: &str = "tracer_floor";

/// (id, run count) of each loaded program named `tracer_floor`.
fn floor_programs() -> Vec<(u64, u64)> {
    bpftool("prog").iter().filter(|p| p["name"] == PROG).map(|p| (p["id"].as_u64().unwrap(), p["run_cnt"].as_u64().unwrap_or(0))).collect()
}

#[test]
fn floor_runs_once_per_drop_and_leaves_nothing() {
    let tracer = Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(floor_programs().is_empty(), "a floor program is loaded before the test: {:?}", floor_programs());
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    let (dport, n) = (31901, 200usize);
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &dport.to_string(), "-j", "DROP"]).unwrap();
    // Run counts are kept while this fd is open (and stop with it).
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).unwrap();
    let dir = TempDir::new("tracer-floor").unwrap();
    let ready = dir.path().join("ready");
    let mut child = Command::new(&tracer.bin)
        .args(["floor", "--tracepoint", "kfree_skb,netif_receive_skb", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait::until("the ready file", TIMEOUT, Duration::from_millis(10), || Ok(ready.exists().then_some(()))).unwrap();

    let progs = floor_programs();
    assert_eq!(progs.len(), 1, "one empty program: {progs:?}");
    let (id, before) = progs[0];
    let mut tps: Vec<String> = bpftool("link")
        .iter()
        .filter(|l| l["prog_id"].as_u64() == Some(id))
        .map(|l| l["tp_name"].as_str().unwrap_or("?").to_string())
        .collect();
    tps.sort();
    assert_eq!(tps, ["kfree_skb", "netif_receive_skb"], "one raw tracepoint link per name");

    assert_eq!(a.send_udp(31900, b.addr(dport), n, b"floor").unwrap(), n);
    wait::until("the rule's counter", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= n as u64).then_some(()))).unwrap();
    // Each datagram is received on a's lxc in the node and dropped in FORWARD: at least two
    // runs each (the machine's other traffic may add more, never fewer).
    let after = floor_programs().first().map_or(0, |p| p.1);
    assert!(after - before >= 2 * n as u64, "runs {before} → {after} for {n} drops");

    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) }, 0);
    let status = wait::until("the floor to exit", TIMEOUT, Duration::from_millis(10), || Ok(child.try_wait()?)).unwrap();
    assert!(status.success(), "exit on SIGINT: {status}");
    assert!(!ready.exists(), "the ready file is removed on the way out");
    wait::until("the program to go", TIMEOUT, Duration::from_millis(10), || Ok(floor_programs().is_empty().then_some(()))).unwrap();
}

#[test]
fn floor_refuses_an_unknown_tracepoint_in_one_line() {
    let tracer = Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = TempDir::new("tracer-floor").unwrap();
    let ready = dir.path().join("ready");
    let out = Command::new(&tracer.bin).args(["floor", "--tracepoint", "no_such_tracepoint", "--ready-file"]).arg(&ready).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("tracer: error: cannot attach to the no_such_tracepoint tracepoint: "), "{stderr}");
    assert!(!ready.exists(), "no ready file for a floor that did not attach");
    // Freed once the kernel's grace period has passed.
    wait::until("nothing left loaded", TIMEOUT, Duration::from_millis(10), || Ok(floor_programs().is_empty().then_some(()))).unwrap();
}
