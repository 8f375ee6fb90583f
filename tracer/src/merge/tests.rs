//! `tracer merge` end to end on synthetic inputs laid out as the tool writes them (no root):
//! an input from before `--node-name` and one that recorded its node, a packet seen leaving one
//! and dropped on the other.
use std::{path::PathBuf, time::Duration};

use pcap_file::pcapng::{Block, PcapNgReader};
use serde_json::Value;
use tracer_common::linktype;

use super::run;
use crate::{args::MergeArgs, sinks::pcapng::{Iface, Pcapng}};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tracer-merge-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FLOW: &str = r#""proto":"udp","src":"10.0.1.10","dst":"10.0.2.10","sport":4000,"dport":53"#;

fn udp_bytes(ip_id: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64).udp(4000, 53).write(&mut v, b"q").unwrap();
    v[14 + 4..14 + 6].copy_from_slice(&ip_id.to_be_bytes());
    v
}

/// A capture directory: drops.jsonl, summary.json (with `node` unless None), drops.pcapng.
fn capture(dir: &std::path::Path, node: Option<&str>, lines: &[String], drops: u64, packets: &[(u64, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("drops.jsonl"), lines.join("\n") + "\n").unwrap();
    let node_field = node.map(|n| format!(r#","node":"{n}""#)).unwrap_or_default();
    std::fs::write(dir.join("summary.json"), format!(r#"{{"drops":{drops},"events":{drops},"lost_events":0,"seen_drops":{drops},"rate_limited":0,"probe_misses":0,"by_reason":[{{"reason":"NETFILTER_DROP","count":{drops}}}]{node_field}}}"#)).unwrap();
    let mut p = Pcapng::create(&dir.join("drops.pcapng"), 256, node).unwrap();
    let iface = Iface { netns: 1, ifindex: 2, ifname: "eth1".into(), linktype: linktype::ETHERNET, pod: None };
    for (i, (t, comment)) in packets.iter().enumerate() {
        p.write(&iface, Duration::from_nanos(*t), 43, &udp_bytes(u16::try_from(i).unwrap() + 7), (*comment).to_string(), true).unwrap();
    }
    p.flush().unwrap();
}

#[test]
fn merges_two_nodes_with_a_cross_node_flow() {
    let tmp = Dir::new("two");
    let (in_x, in_old, out) = (tmp.0.join("in/node-x"), tmp.0.join("in/old-node"), tmp.0.join("out"));
    // node-x follows the packet leaving at t0; the old node drops it 50 µs later on its clock.
    let t0 = 1_700_000_000_000_000_000u64;
    capture(&in_x, Some("node-x"), &[format!(r#"{{"type":"packet","time":"2023-11-14T22:13:20Z",{FLOW},"fate":"sent out eth1 (netns 1)","node":"node-x"}}"#)], 0, &[(t0, "packet 1 path: …; fate: sent out eth1")]);
    capture(&in_old, None, &[format!(r#"{{"type":"drop","time":"2023-11-14T22:13:20.00005Z",{FLOW},"reason":"NETFILTER_DROP"}}"#)], 1, &[(t0 + 50_000, "drop reason=NETFILTER_DROP")]);
    run(&MergeArgs { inputs: vec![in_x.clone(), in_old.clone()], output: out.clone() }).unwrap();
    let s: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["total"]["drops"], 1);
    assert_eq!((s["nodes"][0]["node"].as_str(), s["nodes"][0]["node_from"].as_str()), (Some("node-x"), Some("recorded")));
    assert_eq!(s["nodes"][1]["node"], "old-node");
    assert_eq!(s["nodes"][1]["node_from"], super::load::NAME_FROM_DIR);
    assert_eq!(s["cross_node_flows"][0]["seen"][0]["node"], "node-x");
    assert_eq!(s["cross_node_flows"][0]["dropped"][0]["node"], "old-node");
    let est = &s["clock_offsets"]["estimates"][0];
    assert_eq!((est["offset_ns"].as_i64(), est["matches"].as_u64(), est["matched_by"].as_str()), (Some(50_000), Some(1), Some("packet bytes")), "{est}");
    let lines: Vec<Value> = std::fs::read_to_string(out.join("drops.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["node"].as_str().unwrap()).collect::<Vec<_>>(), ["node-x", "old-node"]);
    let mut reader = PcapNgReader::new(std::fs::File::open(out.join("drops.pcapng")).unwrap()).unwrap();
    let mut names = Vec::new();
    let mut times = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(idb) => names.push(format!("{:?}", idb.options[0])),
            Block::EnhancedPacket(epb) => times.push(epb.timestamp),
            _ => {}
        }
    }
    assert_eq!(names, [r#"IfName("node-x/eth1")"#, r#"IfName("old-node/eth1")"#]);
    assert_eq!(times, [Duration::from_nanos(t0), Duration::from_nanos(t0 + 50_000)]);

    // The output directory now holds files: refused, and left as it was.
    let e = run(&MergeArgs { inputs: vec![in_x.clone()], output: out.clone() }).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
    // Two inputs of one node.
    let e = run(&MergeArgs { inputs: vec![in_x.clone(), in_x], output: tmp.0.join("out2") }).unwrap_err().to_string();
    assert!(e.contains("--node-name") && !tmp.0.join("out2").exists(), "{e}");
    // An earlier merge's output is not an input.
    let e = run(&MergeArgs { inputs: vec![out], output: tmp.0.join("out3") }).unwrap_err().to_string();
    assert!(e.contains("already the output of tracer merge") && !tmp.0.join("out3").exists(), "{e}");
    let left: Vec<_> = std::fs::read_dir(&tmp.0).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 2, "no partial directory left: {left:?}");
}
