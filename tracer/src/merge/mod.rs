//! `tracer merge INPUT... -o DIR`: captures, bundles and `watch` dumps of several nodes made
//! one: `summary.json` (per-node and total rows, cross-node flows, clock offsets, also printed
//! as a table), `drops.pcapng` (every packet in time order, interfaces named `node/ifname`) and
//! `drops.jsonl` (every record in time order, each with its `node`). Inputs are read through
//! the report's reader (report/source.rs). Nothing is written unless every input reads: the
//! outputs go to a temporary directory beside DIR, renamed to DIR at the end.
pub mod clock;
pub mod flows;
pub mod load;
pub mod pcap;
pub mod summary;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use self::{
    clock::{Key, Seen, Sighting},
    load::NodeData,
};
use crate::args::MergeArgs;

pub const METHOD: &str = "smallest delay from leaving one node (--path) to the drop on the other, over packets seen once on each: same IPv4 id/TCP sequence in the pcapngs, else a 5-tuple with one packet each side";

/// DIR must be new or empty; returns whether it exists.
fn check_output(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!("-o {}: the directory is not empty; give a new or empty directory", dir.display());
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => bail!("-o {}: {e}; give a new or empty directory", dir.display()),
    }
}

/// Two inputs of one node would mix two captures' interfaces and counters under one name.
fn check_names(nodes: &[NodeData]) -> Result<()> {
    for (i, a) in nodes.iter().enumerate() {
        if let Some(b) = nodes[..i].iter().find(|b| b.name == a.name) {
            bail!("{} and {} both come from node {:?}; merge one input per node, or capture each with its own --node-name", b.input, a.input, a.name);
        }
    }
    Ok(())
}

/// Packets seen on two nodes, from the pcapngs (by bytes) and from the JSON records (by flow).
fn sightings(nodes: &[NodeData]) -> (Vec<Sighting>, Vec<Sighting>) {
    let (mut by_bytes, mut by_flow) = (Vec::new(), Vec::new());
    for (ni, n) in nodes.iter().enumerate() {
        for p in &n.packets {
            let seen = match p.comment().split(' ').next() {
                Some("packet") => Seen::Left,
                Some("drop") => Seen::Dropped,
                _ => continue,
            };
            let ethernet = n.ifaces[p.iface].linktype == pcap_file::DataLink::ETHERNET;
            if let Some(key) = clock::packet_key(ethernet, &p.data) {
                by_bytes.push(Sighting { node: ni, key, t_ns: i128::from(p.t_ns), seen });
            }
        }
        for r in &n.records {
            let seen = match r.kind() {
                "packet" => Seen::Left,
                "drop" => Seen::Dropped,
                _ => continue,
            };
            if let (Some(t_ns), Some(flow)) = (r.t_ns, flows::FiveTuple::of(&r.value)) {
                by_flow.push(Sighting { node: ni, key: Key::Flow(flow), t_ns, seen });
            }
        }
    }
    (by_bytes, by_flow)
}

/// Every record, in time order (records without a time last, in input order), with `node`.
fn write_jsonl(path: &Path, nodes: &[NodeData]) -> Result<u64> {
    let mut order: Vec<(Option<i128>, usize, usize)> = nodes.iter().enumerate().flat_map(|(ni, n)| n.records.iter().enumerate().map(move |(ri, r)| (r.t_ns, ni, ri))).collect();
    order.sort_by_key(|&(t, ni, ri)| (t.is_none(), t, ni, ri));
    let f = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for &(_, ni, ri) in &order {
        let mut v = nodes[ni].records[ri].value.clone();
        v.insert("node".into(), Value::from(nodes[ni].name.as_str()));
        serde_json::to_writer(&mut w, &v)?;
        w.write_all(b"\n")?;
    }
    w.flush().with_context(|| format!("cannot write {}", path.display()))?;
    Ok(order.len() as u64)
}

fn write_all(tmp: &Path, nodes: &[NodeData]) -> Result<String> {
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let flows = flows::cross_node(&names, nodes.iter().enumerate().flat_map(|(ni, n)| n.records.iter().map(move |r| (ni, &r.value))));
    let (by_bytes, by_flow) = sightings(nodes);
    let mut offsets = clock::estimate(&names, &by_bytes, "packet bytes");
    for o in clock::estimate(&names, &by_flow, "5-tuple") {
        if !offsets.iter().any(|e| e.node == o.node && e.relative_to == o.relative_to) {
            offsets.push(o);
        }
    }
    write_jsonl(&tmp.join("drops.jsonl"), nodes)?;
    pcap::write(&tmp.join("drops.pcapng"), nodes)?;
    let s = summary::build(nodes, &flows, &offsets, METHOD);
    let mut bytes = serde_json::to_vec_pretty(&s)?;
    bytes.push(b'\n');
    std::fs::write(tmp.join("summary.json"), bytes).with_context(|| format!("cannot write {}", tmp.join("summary.json").display()))?;
    Ok(summary::table(nodes, &flows, &offsets, METHOD))
}

fn partial_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map_or_else(|| "merge".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

pub fn run(args: &MergeArgs) -> Result<()> {
    if args.inputs.is_empty() {
        bail!("no INPUT: give capture directories, bundle directories or .tar.zst bundles/dumps");
    }
    let existed = check_output(&args.output)?;
    let nodes = args.inputs.iter().map(|p| load::load(p)).collect::<Result<Vec<_>>>()?;
    check_names(&nodes)?;
    let tmp = partial_dir(&args.output);
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}; check the directory of -o is writable", tmp.display()))?;
    let result = write_all(&tmp, &nodes).and_then(|table| {
        if existed {
            // Empty (checked above): rename(2) replaces an empty directory.
            std::fs::remove_dir(&args.output).with_context(|| format!("cannot replace {}", args.output.display()))?;
        }
        std::fs::rename(&tmp, &args.output).with_context(|| format!("cannot move the outputs to {}", args.output.display()))?;
        Ok(table)
    });
    match result {
        Ok(table) => {
            print!("{table}");
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
