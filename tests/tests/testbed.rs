//! Self-tests of the test harness the other suites stand on: the tc fixture (`cls_bpf` and tcx,
//! two programs on one hook, nothing left behind), the node's cleanup on a panic, and the
//! runner's error for a wrong `TRACER_BIN`. Needs root.
use std::time::Duration;

use anyhow::Result;
use integration_tests::{Attach, Feature, Finished, Node, TcFixture, TcFixtureOptions, Tracer, netns, require};

/// Bound on waiting for deliveries: only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_mins(1);

fn tracer() -> Tracer {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}"))
}

fn fixture_bin() -> std::path::PathBuf {
    integration_tests::fixture_bin(env!("CARGO_BIN_EXE_tc-fixture"))
}

/// Stops the capture once it has counted `n` drops and read everything it counted.
fn stop(run: integration_tests::RunningCapture, n: u64) -> Finished {
    run.stop_after(n).unwrap().ok().unwrap()
}

#[test]
fn tc_fixture_cls_bpf_leaves_no_qdisc() {
    let node = Node::new(1).unwrap();
    let a = node.pod(0);
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &a.lxc, Attach::ClsBpf, &[]);
    opts.bin = Some(fixture_bin());
    opts.programs = vec!["cil_to_container".into(), "cil_from_container".into()];
    let fixture = TcFixture::start(&opts).unwrap();
    let filters = node.exec("tc", &["filter", "show", "dev", &a.lxc, "ingress"]).unwrap();
    assert!(filters.contains("cil_to_container") && filters.contains("cil_from_container"), "{filters}");
    fixture.stop().unwrap();
    let qdiscs = node.exec("tc", &["qdisc", "show", "dev", &a.lxc]).unwrap();
    assert!(!qdiscs.contains("clsact"), "clsact left behind: {qdiscs}");
}

/// Two programs on one hook, as issue 4 needs: the pass-through one first, the dropping one
/// second. Both must run for every packet (their "pass" is `TC_ACT_UNSPEC` / `TCX_NEXT`), and a
/// destination denied while the fixture runs is dropped from then on.
fn tc_fixture_chain(attach: Attach, port: u16) {
    if attach == Attach::Tcx && !require(Feature::Tcx) {
        return;
    }
    let node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &a.lxc, attach, &[]);
    opts.bin = Some(fixture_bin());
    opts.programs = vec!["cil_to_container".into(), "cil_from_container".into()];
    let mut fixture = TcFixture::start(&opts).unwrap();
    let names: Vec<&str> = fixture.programs().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cil_to_container", "cil_from_container"]);
    assert!(fixture.programs().iter().all(|p| p.id > 0 && p.tag.len() == 16));
    let listener = b.listen_udp(port).unwrap();
    a.send_udp(port, b.addr(port), 5, b"allowed").unwrap();
    listener.wait_for(5, TIMEOUT).unwrap();
    fixture.deny(b.ip).unwrap();
    let run = tracer().capture().expression(format!("host {} and udp port {port}", b.ip)).start().unwrap();
    a.send_udp(port, b.addr(port), 8, b"denied now").unwrap();
    let done = stop(run, 8);
    let stats = fixture.stats().unwrap();
    assert_eq!(stats, integration_tests::FixtureStats { from_shot: 8, from_passed: 5, to_passed: 13 });
    assert_eq!(listener.stop().unwrap(), 5);
    assert_eq!(done.drops().unwrap(), 8);
    assert!(done.events.iter().all(|e| e["reason"] == "TC_INGRESS" && e["ifname"] == a.lxc.as_str()));
    fixture.stop().unwrap();
}

#[test]
fn tc_fixture_chain_tcx() {
    tc_fixture_chain(Attach::Tcx, 31321);
}

#[test]
fn tc_fixture_chain_cls_bpf() {
    tc_fixture_chain(Attach::ClsBpf, 31331);
}

#[test]
fn node_is_removed_on_panic() {
    let mut names = Vec::new();
    let mut fixture_pid = 0;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut node = Node::new(2).unwrap();
        names.push(node.netns().to_string());
        names.extend(node.pods().iter().map(|p| p.netns.clone()));
        node.iptables("filter", "FORWARD", &["-p", "udp", "-j", "DROP"]).unwrap();
        let lxc = node.pod(0).lxc.clone();
        let mut opts = TcFixtureOptions::from_container(Some(node.netns_path()), &lxc, Attach::ClsBpf, &[]);
        opts.bin = Some(fixture_bin());
        let fixture = TcFixture::start(&opts).unwrap();
        fixture_pid = fixture.pid().unwrap();
        panic!("planted panic: the fixture and the node must still be removed");
    }));
    assert!(result.is_err());
    assert_eq!(names.len(), 3);
    for ns in &names {
        assert!(!netns::path(ns).exists(), "{ns} left behind");
    }
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(i32::try_from(fixture_pid).unwrap(), 0) } == 0;
    assert!(!alive, "tc-fixture {fixture_pid} still running");
}

#[test]
fn missing_tracer_bin_is_a_clear_error() -> Result<()> {
    // The runner itself: a wrong TRACER_BIN names the variable and what to do. Checked in a
    // child process so this test's environment is not changed under the others.
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--exact", "print_tracer_from_env", "--nocapture", "--include-ignored"])
        .env("TRACER_BIN", "/nonexistent/tracer")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("TRACER_BIN=/nonexistent/tracer does not exist"), "{text}");
    Ok(())
}

#[test]
#[ignore = "helper run by missing_tracer_bin_is_a_clear_error"]
fn print_tracer_from_env() {
    match Tracer::from_env() {
        Ok(t) => println!("tracer at {}", t.bin.display()),
        Err(e) => println!("{e:#}"),
    }
}
