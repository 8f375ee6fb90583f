//! The embedded eBPF object declares every map and program userspace names (tracer-common's
//! `names`), and no map userspace does not know: read from the object itself, so a renamed
//! map or program fails here rather than at load time on a node.
use std::collections::BTreeSet;

use tracer_common::{names, tc::POSITIONS};

fn object() -> aya_obj::Object {
    aya_obj::Object::parse(tracer::probes::loader::object()).expect("the embedded eBPF object parses")
}

#[test]
fn maps_are_the_ones_userspace_names() {
    let obj = object();
    // Globals (OFFSETS, CONFIG) live in the object's data sections, which are maps too.
    let declared: BTreeSet<&str> = obj.maps.keys().map(String::as_str).filter(|m| !m.starts_with('.')).collect();
    let named: BTreeSet<&str> = names::MAPS.into_iter().collect();
    assert_eq!(declared, named, "maps in the object vs tracer_common::names::MAPS");
}

#[test]
fn every_program_userspace_attaches_is_there() {
    let obj = object();
    let mut want: Vec<String> = [names::KFREE_SKB_BTF, names::KFREE_SKB_RAW].map(String::from).to_vec();
    want.extend(names::PATH_TRACEPOINTS.iter().map(|(prog, _)| (*prog).to_string()));
    want.extend(names::PATH_TP_BTF.iter().map(|(prog, _)| (*prog).to_string()));
    want.extend(names::PATH_FUNCTIONS.iter().map(|(f, _)| format!("path_fe_{}", f.trim_start_matches('_'))));
    let args: BTreeSet<u8> = names::PATH_FUNCTIONS.iter().map(|(_, a)| *a).collect();
    want.extend(args.iter().map(|a| format!("path_kprobe_a{a}")));
    for dir in ['i', 'e'] {
        want.extend((0..POSITIONS).map(|p| format!("{}{dir}{p}", names::TC_OBSERVER_PREFIX)));
    }
    let missing: Vec<&String> = want.iter().filter(|p| !obj.programs.contains_key(p.as_str())).collect();
    assert!(missing.is_empty(), "programs missing from the object: {missing:?}; it has {:?}", obj.programs.keys().collect::<BTreeSet<_>>());
}
