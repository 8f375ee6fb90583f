//! Kernel state a run could leave changed or behind: rulesets, tc filters and tcx programs,
//! BPF objects (and which of them are debris), mounts, pins and temporary files.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{Node, cmd, netns};
use serde_json::Value;

use crate::TIMEOUT;

/// `iptables-save` and `nft -s list ruleset` (stateless: no counter values) of the node and its
/// pods, without comments and chain counters.
pub fn rulesets(node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let spaces: Vec<String> = std::iter::once(node.netns().to_string()).chain(node.pods().iter().map(|p| p.netns.clone())).collect();
    for ns in spaces {
        let save = cmd::run_in(&ns, "iptables-save", &[] as &[&str]).unwrap();
        let save: Vec<String> = save
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| if l.starts_with(':') { l.split(" [").next().unwrap_or(l).to_string() } else { l.to_string() })
            .collect();
        out.insert(format!("{ns} iptables-save"), save.join("\n"));
        out.insert(format!("{ns} nft"), cmd::run_in(&ns, "nft", &["-s", "list", "ruleset"]).unwrap());
    }
    out
}

/// Interfaces of a namespace (names without `@peer`).
pub fn links(ns: &str) -> Vec<String> {
    cmd::run("ip", &["-n", ns, "-o", "link", "show"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// qdiscs, filters (both directions) and tcx programs of every interface of the node and its
/// pods.
pub fn tc_state(node: &Node) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let spaces: Vec<String> = std::iter::once(node.netns().to_string()).chain(node.pods().iter().map(|p| p.netns.clone())).collect();
    for ns in spaces {
        for dev in links(&ns) {
            let tc = |args: &[&str]| {
                let mut full = vec!["-n", ns.as_str()];
                full.extend_from_slice(args);
                cmd::output(Command::new("tc").args(&full), None, cmd::TIMEOUT).map(|o| o.stdout).unwrap_or_default()
            };
            out.insert(format!("{ns} {dev} qdisc"), tc(&["qdisc", "show", "dev", &dev]));
            for dir in ["ingress", "egress"] {
                out.insert(format!("{ns} {dev} filter {dir}"), tc(&["filter", "show", "dev", &dev, dir]));
            }
            out.insert(format!("{ns} {dev} tcx"), tcx_programs(&ns, &dev).join("\n"));
        }
    }
    out
}

/// tcx programs on an interface, both directions (`BPF_PROG_QUERY`; the bpftool here predates tcx).
pub fn tcx_programs(ns: &str, dev: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let dev = dev.to_string();
    netns::run(ns, move || {
        let mut v = Vec::new();
        for t in [TcAttachType::Ingress, TcAttachType::Egress] {
            if let Ok((_, progs)) = SchedClassifier::query_tcx(&dev, t) {
                v.extend(progs.iter().map(|p| format!("{t:?}: {} id {}", p.name_as_str().unwrap_or("?"), p.id())));
            }
        }
        Ok(v)
    })
    .unwrap()
}

/// The tc state without our observers: filter lines of other programs, tcx programs not ours.
pub fn without_ours(state: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    state
        .iter()
        .map(|(k, v)| {
            let kept: Vec<&str> = if k.contains(" filter ") {
                v.lines().filter(|l| l.contains("handle") && !l.contains("tracer_tc")).collect()
            } else {
                v.lines().filter(|l| !l.contains("tracer_tc")).collect()
            };
            (k.clone(), kept.join("\n"))
        })
        .collect()
}

pub fn ours_in(state: &BTreeMap<String, String>) -> usize {
    state.values().flat_map(|v| v.lines()).filter(|l| l.contains("tracer_tc")).count()
}

/// A BPF object the kernel holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Obj {
    pub kind: &'static str,
    pub id: u64,
    pub name: String,
}

/// Names of the maps tracer-ebpf declares (`#[map(name = "…")]`), read from its sources at build
/// time (tests/build.rs, so also where they are absent) and a new map needs no edit here.
pub fn our_map_names() -> BTreeSet<String> {
    let all: &[&str] = include!(concat!(env!("OUT_DIR"), "/our_maps.rs"));
    let names: BTreeSet<String> = all.iter().map(ToString::to_string).collect();
    assert!(names.contains("EVENTS") && names.contains("TC_RING") && names.len() >= 10, "{names:?}");
    names
}

/// Program names of ours: tc observers and the netfilter observer (`tracer_`), the drop probe
/// (`kfree_skb_`), the path probes (`path_`).
pub fn is_our_prog(name: &str) -> bool {
    ["tracer_", "kfree_skb_", "path_"].iter().any(|p| name.starts_with(p))
}

pub use integration_tests::kernel::bpftool;

/// Our BPF objects, found by name; `seen` remembers our programs (and the maps they use, such as
/// aya's `.rodata`) so their links and unnamed maps are recognised later.
#[derive(Default)]
pub struct Seen {
    pub progs: BTreeSet<u64>,
    pub maps: BTreeSet<u64>,
}

pub fn our_objects(seen: &mut Seen) -> BTreeSet<Obj> {
    let map_names = our_map_names();
    let mut out = BTreeSet::new();
    for p in bpftool("prog") {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        if is_our_prog(&name) {
            let id = p["id"].as_u64().unwrap_or(0);
            seen.progs.insert(id);
            seen.maps.extend(p["map_ids"].as_array().into_iter().flatten().filter_map(Value::as_u64));
            out.insert(Obj { kind: "prog", id, name });
        }
    }
    for m in bpftool("map") {
        let (id, name) = (m["id"].as_u64().unwrap_or(0), m["name"].as_str().unwrap_or_default().to_string());
        if map_names.contains(&name) || seen.maps.contains(&id) {
            out.insert(Obj { kind: "map", id, name });
        }
    }
    for l in bpftool("link") {
        if l["prog_id"].as_u64().is_some_and(|p| seen.progs.contains(&p)) {
            out.insert(Obj { kind: "link", id: l["id"].as_u64().unwrap_or(0), name: format!("type {} prog {}", l["type"], l["prog_id"]) });
        }
    }
    out
}

/// (kind, id) of every BPF object a live process holds an fd of (`/proc/*/fdinfo`), with the maps
/// of those programs.
pub fn held_by_processes() -> BTreeSet<(&'static str, u64)> {
    let mut held = BTreeSet::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else { continue };
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else { continue };
            for (key, kind) in [("prog_id:", "prog"), ("map_id:", "map"), ("link_id:", "link")] {
                if let Some(v) = text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()) {
                    held.insert((kind, v));
                }
            }
        }
    }
    for p in bpftool("prog") {
        if held.contains(&("prog", p["id"].as_u64().unwrap_or(0))) {
            for m in p["map_ids"].as_array().into_iter().flatten().filter_map(Value::as_u64) {
                held.insert(("map", m));
            }
        }
    }
    held
}

/// Our objects that are new since `before` and that no live process holds: debris.
pub fn debris(before: &BTreeSet<Obj>, seen: &mut Seen) -> Vec<Obj> {
    let now = our_objects(seen);
    let held = held_by_processes();
    now.into_iter().filter(|o| !before.contains(o) && !held.contains(&(o.kind, o.id))).collect()
}

/// Waits (bounded: the kernel frees programs of a dead process after an RCU grace period) until
/// `ok` accepts the debris; returns the last debris seen.
pub fn settle_debris(before: &BTreeSet<Obj>, seen: &mut Seen, ok: impl Fn(&[Obj]) -> bool) -> Vec<Obj> {
    let start = Instant::now();
    loop {
        let d = debris(before, seen);
        if ok(&d) || start.elapsed() > TIMEOUT {
            return d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// tracefs mounts and bpffs entries with our names: nothing of ours may stay.
pub fn mounts_and_pins() -> (usize, Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tracefs = mounts.lines().filter(|l| l.contains(" tracefs ") || l.contains("tracer-tracefs")).count();
    let maps = our_map_names();
    let mut pins = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/bpf"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_our_prog(&name) || maps.contains(&name) || name.contains("tracer") {
                pins.push(e.path().display().to_string());
            }
            if depth < 4 && e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    (tracefs, pins)
}

/// Entries of the temporary directory the tracer would use (`tracer-*`).
pub fn tracer_temp_files() -> BTreeSet<String> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tracer-"))
        .collect()
}
