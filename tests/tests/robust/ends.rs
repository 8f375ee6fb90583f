//! Every way a run ends: a capture with every feature on, ended one way, then checked for
//! debris and readable outputs.

use std::{os::unix::process::ExitStatusExt as _, time::Duration};

use integration_tests::{Attach, Direction, wait};

use crate::{
    TIMEOUT, cni_cache, every_feature, fixture,
    kernel_state::{Obj, Seen, mounts_and_pins, our_objects, ours_in, settle_debris, tc_state, tracer_temp_files},
    node,
    outputs::{pcapng_readable, read_jsonl, walk_pcapng},
    tracer,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Sigint,
    Sigterm,
    Duration,
    Sigkill,
    Panic,
}

/// A capture with every feature on ends by `end`. Afterwards: no BPF program, map or link of
/// ours, no tc filter, tcx link, pinned object, tracefs mount or temporary file (after SIGKILL the
/// `cls_bpf` observers stay until the next run, which removes them); outputs readable, with
/// exactly the drops that were flushed (all of them: traffic ends > 1 s before a kill).
pub fn ends_cleanly(end: End, port: u16) {
    let mut node = node(3);
    let (a, b, c) = (node.pod(0).clone(), node.pod(1).clone(), node.pod(2).clone());
    let cache = cni_cache(&node);
    let rule = node.iptables("filter", "FORWARD", &["-d", &b.ip.to_string(), "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]).unwrap();
    let mut shooter = fixture(&node, &a, Attach::ClsBpf, Direction::Ingress, &["cil_from_container"], &[c.ip]);
    let _second = fixture(&node, &b, Attach::tcx_or_cls_bpf(), Direction::Egress, &["cil_to_container"], &[]);
    let mut seen = Seen::default();
    let before = our_objects(&mut seen);
    let tc0 = tc_state(&node);
    let (mounts0, pins0) = mounts_and_pins();
    let temp0 = tracer_temp_files();

    let mut cap = every_feature(&cache, &a).expression(format!("udp and net 10.240.0.0/16 and port {port}"));
    if end == End::Duration {
        // Long enough for the traffic and the checks below on a slow machine; it ends the run.
        cap = cap.arg("--duration").arg("20s");
    }
    let wanted = 50;
    if end == End::Panic {
        // Once the last event is written, whatever the machine's speed.
        cap = cap.env("TRACER_TEST_PANIC_AFTER_EVENTS", wanted.to_string());
    }
    let run = cap.start().unwrap();
    let pid = run.pid().unwrap();
    let attached = |seen: &mut Seen| {
        let during = our_objects(seen);
        assert!(during.iter().filter(|o| o.kind == "prog").count() >= 4 && during.iter().any(|o| o.kind == "link"), "attached: {during:?}");
        assert!(ours_in(&tc_state(&node)) >= 2, "tc observers attached");
    };
    // The panic follows the last event: check what is attached before sending.
    if end == End::Panic {
        attached(&mut seen);
    }
    assert_eq!(a.send_udp(port, b.addr(port), 30, b"iptables").unwrap(), 30);
    assert_eq!(a.send_udp(port, c.addr(port), 20, b"tc").unwrap(), 20);
    wait::until("the kernel's counters", TIMEOUT, Duration::from_millis(10), || Ok((node.iptables_packets(&rule)? >= 30 && shooter.stats()?.from_shot >= 20).then_some(()))).unwrap();
    match end {
        End::Panic => {}
        // A kill keeps what was flushed (at least every second): wait until all of it was.
        End::Sigkill => drop(run.wait_for_written(wanted).unwrap()),
        End::Sigint | End::Sigterm | End::Duration => drop(run.wait_for_drops(wanted).unwrap()),
    }
    if end != End::Panic {
        attached(&mut seen);
    }
    let done = match end {
        End::Sigint => run.stop(),
        End::Sigterm => run.stop_with(libc::SIGTERM),
        End::Sigkill => run.stop_with(libc::SIGKILL),
        End::Duration | End::Panic => run.wait(),
    }
    .unwrap();

    // Exit status and the line it says.
    match end {
        End::Sigint | End::Sigterm | End::Duration => assert!(done.status.success(), "{end:?}: {}", done.stderr),
        End::Sigkill => assert_eq!(done.status.signal(), Some(libc::SIGKILL)),
        End::Panic => {
            assert_eq!(done.status.code(), Some(101), "{}", done.stderr);
            let line = done.stderr_lines().into_iter().find(|l| l.contains("panic")).unwrap_or_default().to_string();
            assert!(line.starts_with("tracer: error: internal error (panic at ") && line.contains("TRACER_TEST_PANIC_AFTER_EVENTS"), "{}", done.stderr);
        }
    }

    // Outputs.
    let json = done.dir.join("drops.jsonl");
    let (drops, records, cut_json) = read_jsonl(&json);
    assert_eq!(drops, wanted, "{end:?}: drop events in the JSON; stderr:\n{}", done.stderr);
    assert!(records > drops, "path records too");
    let (packets, pcap_drops, whole, cut_pcap) = walk_pcapng(&done.dir.join("drops.pcapng"));
    assert_eq!(pcap_drops, wanted, "{end:?}: dropped packets in the pcapng");
    pcapng_readable(&done.dir.join("drops.pcapng"), whole, packets);
    if matches!(end, End::Sigkill | End::Panic) {
        assert!(done.summary.is_none(), "no summary after {end:?}");
        eprintln!("{end:?}: JSON {records} records ({drops} drops, cut tail: {cut_json}), pcapng {packets} packets (cut tail: {cut_pcap})");
    } else {
        assert!(!cut_json && !cut_pcap, "complete files");
        let s = done.summary().unwrap();
        assert_eq!((s["drops"].as_u64(), s["events"].as_u64(), s["lost_events"].as_u64()), (Some(wanted), Some(wanted), Some(0)), "{s}");
    }
    let files = done.dir.entries().unwrap();
    let expected: Vec<&str> = if matches!(end, End::Sigkill | End::Panic) { vec!["drops.jsonl", "drops.pcapng", "ready"] } else { vec!["drops.jsonl", "drops.pcapng", "ready", "summary.json"] };
    assert_eq!(files, expected, "no temporary file beside the outputs");

    // Debris.
    if end == End::Sigkill {
        let left = settle_debris(&before, &mut seen, |d| d.iter().all(|o| (o.kind == "prog" && o.name.starts_with("tracer_tc_")) || o.kind == "map"));
        let tc_left: Vec<String> = tc_state(&node).values().flat_map(|v| v.lines().filter(|l| l.contains("tracer_tc")).map(String::from).collect::<Vec<_>>()).collect();
        assert!(!tc_left.is_empty() && tc_left.iter().all(|l| l.contains(&format!("tracer_tc pid={pid}"))), "SIGKILL leaves our cls_bpf filters, named: {tc_left:?}");
        assert!(left.iter().any(|o| o.name.starts_with("tracer_tc_")) && left.iter().all(|o| o.kind != "link"), "only the filters' programs (and their maps) stay: {left:?}");
        // The next run removes them, then leaves nothing itself.
        let next = tracer().capture().arg("--duration").arg("1s").expression("udp port 9").run(integration_tests::tracer::READY_TIMEOUT).unwrap().ok().unwrap();
        assert!(next.stderr.contains("tc observer filters left by a killed earlier run"), "{}", next.stderr);
    }
    let left = settle_debris(&before, &mut seen, <[Obj]>::is_empty);
    assert!(left.is_empty(), "{end:?} left BPF objects: {left:?}");
    assert_eq!(tc_state(&node), tc0, "{end:?}: tc state as before");
    assert_eq!(mounts_and_pins(), (mounts0, pins0), "{end:?}: no tracefs mount or pinned object left");
    assert_eq!(tracer_temp_files(), temp0, "{end:?}: no temporary file left");
}
