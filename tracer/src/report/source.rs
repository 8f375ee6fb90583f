//! What `tracer report` accepts as one INPUT, and reading it:
//! - a capture directory: `drops.jsonl` and/or `summary.json` (the `--json`/`--summary` files of
//!   one capture, under those names), `drops.pcapng` beside them is ignored;
//! - a bundle directory (`capture --bundle DIR`, or a `watch` dump of the same layout):
//!   `MANIFEST.json`, `capture/`, `start/`, `end/`, `versions.json`, `probes.json`;
//! - a bundle archive `DIR.tar.zst` (read in memory, nothing is unpacked to disk).
//!
//! Events are streamed (a capture of a million drops is never held whole), and so is the pcapng
//! for a reader that asks for it (`tracer merge`); the other files are small and kept in memory
//! by their path inside the bundle. A bundle of a layout version this tracer does not know is
//! refused (`tracer report` and `tracer merge` read through here alike).
use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// Node-state files larger than this are not read (a node's ruleset is far smaller).
const MAX_FILE: u64 = 64 << 20;
/// The events of one input.
pub const EVENTS: &str = "capture/drops.jsonl";
/// The packets of one input.
pub const PCAPNG: &str = "capture/drops.pcapng";
/// The bundle layout (`MANIFEST.json` `bundle_version`) this tracer reads.
pub const BUNDLE_VERSION: u64 = 1;

/// Called with the JSON Lines stream of an input.
pub type OnEvents<'a> = &'a mut dyn FnMut(&mut dyn BufRead) -> Result<()>;
/// Called with the pcapng stream of an input.
pub type OnPcap<'a> = &'a mut dyn FnMut(&mut dyn Read) -> Result<()>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capture,
    Bundle,
}

/// One INPUT: its small files by path (a capture directory's files are filed under `capture/`
/// like a bundle's, so the rest of the report sees one layout).
pub struct Input {
    pub path: PathBuf,
    pub kind: Kind,
    /// The directory or archive name without `.tar.zst` (the node's label unless the data names it).
    pub name: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Input {
    pub fn json(&self, rel: &str) -> Option<serde_json::Value> {
        self.files.get(rel).and_then(|b| serde_json::from_slice(b).ok())
    }

    pub fn text(&self, rel: &str) -> Option<String> {
        self.files.get(rel).map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Opens INPUT and calls `on_events` with the JSON Lines stream (when there is one).
pub fn read(path: &Path, on_events: OnEvents<'_>) -> Result<Input> {
    read_streams(path, on_events, None)
}

/// [`read`], and `on_pcap` with the pcapng stream (when there is one).
pub fn read_streams(path: &Path, on_events: OnEvents<'_>, on_pcap: Option<OnPcap<'_>>) -> Result<Input> {
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("{shown}: cannot read it; give a capture directory, a bundle directory or a bundle .tar.zst"))?;
    let input = if meta.is_dir() {
        read_dir(path, on_events, on_pcap)?
    } else if path.to_string_lossy().ends_with(".tar.zst") {
        read_archive(path, on_events, on_pcap).map_err(|e| anyhow::anyhow!("{shown}: damaged or incomplete archive ({e:#}); copy it again or give the bundle directory"))?
    } else {
        bail!("{shown}: not a capture directory, bundle directory or .tar.zst bundle; give the directory holding drops.jsonl/summary.json, or the bundle")
    };
    check_version(&input)?;
    Ok(input)
}

/// A bundle says its layout version; one this tracer does not know is refused, not misread.
fn check_version(input: &Input) -> Result<()> {
    let Some(bytes) = input.files.get("MANIFEST.json") else { return Ok(()) };
    let shown = input.path.display();
    let manifest: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{shown}: MANIFEST.json is not JSON ({e}); copy the bundle again"))?;
    match manifest["bundle_version"].as_u64() {
        // Without one (written by hand, or by a tool that does not version it): read as the one
        // layout known.
        Some(BUNDLE_VERSION) | None => Ok(()),
        Some(v) => bail!("{shown}: bundle version {v}, this tracer ({}) reads version {BUNDLE_VERSION}; read it with the tracer that wrote it (its MANIFEST.json names tool_version)", env!("CARGO_PKG_VERSION")),
    }
}

fn name_of(path: &Path) -> String {
    let n = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    n.strip_suffix(".tar.zst").map(str::to_string).unwrap_or(n)
}

fn read_dir(dir: &Path, on_events: OnEvents<'_>, on_pcap: Option<OnPcap<'_>>) -> Result<Input> {
    let mut input = Input { path: dir.to_path_buf(), kind: Kind::Bundle, name: name_of(&dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())), files: BTreeMap::new() };
    if dir.join("MANIFEST.json").is_file() || dir.join("capture").is_dir() {
        collect(dir, "", &mut input.files)?;
        input.files.remove(PCAPNG);
        events_file(&dir.join(EVENTS), on_events)?;
        pcap_file(&dir.join(PCAPNG), on_pcap)?;
    } else if dir.join("drops.jsonl").is_file() || dir.join("summary.json").is_file() {
        input.kind = Kind::Capture;
        if let Some(b) = small(&dir.join("summary.json"))? {
            input.files.insert("capture/summary.json".into(), b);
        }
        events_file(&dir.join("drops.jsonl"), on_events)?;
        pcap_file(&dir.join("drops.pcapng"), on_pcap)?;
    } else {
        bail!("{}: holds neither drops.jsonl/summary.json (a capture's --json/--summary outputs under those names) nor MANIFEST.json (a bundle)", dir.display());
    }
    Ok(input)
}

fn pcap_file(p: &Path, on_pcap: Option<OnPcap<'_>>) -> Result<()> {
    let Some(on_pcap) = on_pcap.filter(|_| p.is_file()) else { return Ok(()) };
    let f = File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    on_pcap(&mut BufReader::with_capacity(1 << 20, f))
}

fn events_file(p: &Path, on_events: OnEvents<'_>) -> Result<()> {
    if !p.is_file() {
        return Ok(());
    }
    let f = File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    on_events(&mut BufReader::with_capacity(1 << 20, f))
}

fn small(p: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE => Ok(Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)),
        _ => Ok(None),
    }
}

/// Every small regular file under `dir` except the events, by relative path.
fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for e in entries.flatten() {
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        let ft = e.file_type()?;
        if ft.is_dir() {
            collect(&e.path(), &format!("{rel}/"), out)?;
        } else if ft.is_file()
            && rel != EVENTS
            && !rel.ends_with(".pcapng")
            && let Some(b) = small(&e.path())?
        {
            out.insert(rel, b);
        }
    }
    Ok(())
}

/// The archive holds `NAME/…`; paths are kept relative to `NAME/`. Read to the end, so a cut or
/// corrupt archive is refused as a whole.
fn read_archive(path: &Path, on_events: OnEvents<'_>, mut on_pcap: Option<OnPcap<'_>>) -> Result<Input> {
    let file = File::open(path)?;
    let dec = zstd::Decoder::new(file)?;
    let mut tar = tar::Archive::new(dec);
    let mut input = Input { path: path.to_path_buf(), kind: Kind::Bundle, name: name_of(path), files: BTreeMap::new() };
    let mut saw_manifest = false;
    for entry in tar.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let full = entry.path()?.to_string_lossy().into_owned();
        let rel = full.split_once('/').map_or(full.as_str(), |(_, r)| r).to_string();
        if rel == EVENTS {
            on_events(&mut BufReader::with_capacity(1 << 20, &mut entry))?;
            // What the reader left (it may stop early) must still be read to check the archive.
            std::io::copy(&mut entry, &mut std::io::sink())?;
        } else if rel == PCAPNG
            && let Some(f) = on_pcap.as_mut()
        {
            f(&mut entry)?;
            std::io::copy(&mut entry, &mut std::io::sink())?;
        } else if rel.ends_with(".pcapng") || entry.size() > MAX_FILE {
            std::io::copy(&mut entry, &mut std::io::sink())?;
        } else {
            let mut b = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            entry.read_to_end(&mut b)?;
            saw_manifest |= rel == "MANIFEST.json";
            input.files.insert(rel, b);
        }
    }
    // The end-of-archive blocks may come before the end of the zstd frame: read the rest, so a
    // cut frame is an error rather than a silently shorter bundle.
    std::io::copy(&mut tar.into_inner(), &mut std::io::sink())?;
    if !saw_manifest {
        bail!("no MANIFEST.json in it");
    }
    Ok(input)
}
