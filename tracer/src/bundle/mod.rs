//! `tracer capture --bundle DIR`: the evidence to attach to an incident write-up. Beside the
//! capture's pcapng, JSON Lines and summary, DIR holds the node's state at the start and at the
//! end of the capture (`start/`, `end/`: see snapshot.rs), the probes used, kernel and tool
//! versions, a `MANIFEST.json` listing every file, and `DIR.tar.zst` packs it all.
//!
//! DIR must be new or empty. Until `finish` succeeds the bundle is provisional: dropping it
//! (any error on the way) removes what it wrote.
pub mod archive;
pub mod snapshot;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{args::CaptureArgs, model::time::rfc3339};

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Json,
    Jsonl,
    IptablesSave,
    Pcapng,
    Text,
    Html,
}

#[derive(Debug, Serialize)]
pub struct Entry {
    /// Relative to the bundle directory.
    pub path: String,
    /// `start`, `end`, `capture` or `bundle`.
    pub phase: String,
    /// The command or file it came from.
    pub source: String,
    pub format: Format,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Skip {
    pub what: String,
    pub why: String,
}

/// Writes files into the bundle and keeps the manifest's lists.
pub struct Recorder {
    dir: PathBuf,
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skip>,
}

impl Recorder {
    /// Writes `bytes` at `phase/rel` (or `rel` for the `bundle` phase); a write error is
    /// recorded as a skip so one unwritable file does not lose the rest.
    pub fn write(&mut self, phase: &str, rel: &str, source: &str, format: Format, bytes: &[u8]) {
        let path = if phase == "bundle" { rel.to_string() } else { format!("{phase}/{rel}") };
        let full = self.dir.join(&path);
        let r = full.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&full, bytes));
        match r {
            Ok(()) => self.entries.push(Entry { path, phase: phase.to_string(), source: source.to_string(), format, bytes: bytes.len() as u64 }),
            Err(e) => self.skip(path, format!("cannot write it: {e}")),
        }
    }

    pub fn write_json(&mut self, phase: &str, rel: &str, source: &str, v: &Value) {
        let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
        bytes.push(b'\n');
        self.write(phase, rel, source, Format::Json, &bytes);
    }

    pub fn skip(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.skipped.push(Skip { what: what.into(), why: why.into() });
    }
}

pub struct Bundle {
    rec: Recorder,
    archive: PathBuf,
    /// We created the directory (so a failed run may remove it whole).
    created_dir: bool,
    done: bool,
    start: String,
    /// The capture outputs that were defaulted into the bundle (not to be copied again).
    defaulted: Vec<PathBuf>,
    /// More MANIFEST.json fields (a `tracer watch` dump: its trigger, window and node).
    extra: serde_json::Map<String, Value>,
}

fn now() -> String {
    rfc3339(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}

impl Bundle {
    /// Checks and creates DIR, and points the capture's outputs the user did not name into it.
    pub fn prepare(args: &mut CaptureArgs) -> Result<Option<Self>> {
        let Some(dir) = args.bundle.clone() else { return Ok(None) };
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| !n.is_empty() && n != "..");
        let Some(name) = name else { bail!("--bundle {}: give a directory name, e.g. --bundle incident-42", dir.display()) };
        let archive = dir.with_file_name(format!("{name}.tar.zst"));
        if archive.exists() {
            bail!("--bundle: {} already exists; choose another bundle name or move it away", archive.display());
        }
        let created_dir = if dir.exists() {
            let empty = std::fs::read_dir(&dir).with_context(|| format!("--bundle {}: not a readable directory", dir.display()))?.next().is_none();
            if !empty {
                bail!("--bundle {}: the directory is not empty; give a new or empty directory", dir.display());
            }
            false
        } else {
            std::fs::create_dir_all(&dir).with_context(|| format!("--bundle: cannot create {}", dir.display()))?;
            true
        };
        let mut defaulted = Vec::new();
        let capture = dir.join("capture");
        std::fs::create_dir_all(&capture).with_context(|| format!("cannot create {}", capture.display()))?;
        for (slot, file) in [(&mut args.pcap, "drops.pcapng"), (&mut args.json, "drops.jsonl"), (&mut args.summary, "summary.json")] {
            if slot.is_none() {
                let p = capture.join(file);
                defaulted.push(p.clone());
                *slot = Some(p);
            }
        }
        Ok(Some(Self {
            rec: Recorder { dir, entries: Vec::new(), skipped: Vec::new() },
            archive,
            created_dir,
            done: false,
            start: now(),
            defaulted,
            extra: serde_json::Map::new(),
        }))
    }

    /// Adds a field to MANIFEST.json (the standard fields win).
    pub fn manifest_field(&mut self, key: &str, value: Value) {
        self.extra.insert(key.into(), value);
    }

    pub fn dir(&self) -> &Path {
        &self.rec.dir
    }

    /// The node state before the probes attach.
    pub fn start(&mut self) {
        self.start = now();
        let v = snapshot::versions();
        self.rec.write_json("bundle", "versions.json", "kernel and tool versions", &v);
        snapshot::take(&mut self.rec, "start");
    }

    /// After a successful capture: the end state, the capture's files, probes, manifest, archive.
    /// Returns the archive's path.
    pub fn finish(mut self, args: &CaptureArgs, drop_probe: &str) -> Result<PathBuf> {
        snapshot::take(&mut self.rec, "end");
        let end = now();
        for (path, file, format) in [(&args.pcap, "drops.pcapng", Format::Pcapng), (&args.json, "drops.jsonl", Format::Jsonl), (&args.summary, "summary.json", Format::Json)] {
            let Some(p) = path else { continue };
            if p.as_os_str() == "-" {
                self.rec.skip(format!("capture/{file}"), "written to stdout (-), not kept in the bundle");
                continue;
            }
            let source = p.display().to_string();
            if self.defaulted.contains(p) {
                let bytes = std::fs::metadata(p).map_or(0, |m| m.len());
                self.rec.entries.push(Entry { path: format!("capture/{file}"), phase: "capture".into(), source: "tracer capture".into(), format, bytes });
            } else {
                match std::fs::read(p) {
                    Ok(b) => self.rec.write("capture", file, &source, format, &b),
                    Err(e) => self.rec.skip(format!("capture/{file}"), format!("cannot read {source}: {e}")),
                }
            }
        }
        let probes = json!({ "kfree_skb": drop_probe, "expression": args.expression.join(" ") });
        self.rec.write_json("bundle", "probes.json", "tracer capture", &probes);
        self.write_manifest(&end)?;
        // The page reads the finished bundle (MANIFEST included), then is listed in it; without
        // it the bundle is still whole evidence.
        match crate::report::write_into_bundle(&self.rec.dir) {
            Ok(()) => {
                let bytes = std::fs::metadata(self.rec.dir.join("report.html")).map_or(0, |m| m.len());
                self.rec.entries.push(Entry { path: "report.html".into(), phase: "bundle".into(), source: "tracer report".into(), format: Format::Html, bytes });
                self.write_manifest(&end)?;
            }
            Err(e) => eprintln!("tracer: warning: no report.html in the bundle: {e:#}"),
        }
        archive::pack(&self.rec.dir, &self.archive)?;
        self.done = true;
        Ok(self.archive.clone())
    }
}

impl Bundle {
    fn write_manifest(&self, end: &str) -> Result<()> {
        let manifest = json!({
            "bundle_version": 1,
            "tool": "tracer",
            "tool_version": env!("CARGO_PKG_VERSION"),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "start": self.start,
            "end": end,
            "archive": self.archive.file_name().map(|n| n.to_string_lossy().into_owned()),
            "files": self.rec.entries,
            "skipped": self.rec.skipped,
        });
        let mut manifest = manifest;
        if let Value::Object(m) = &mut manifest {
            for (k, v) in &self.extra {
                m.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let mut bytes = serde_json::to_vec_pretty(&manifest)?;
        bytes.push(b'\n');
        std::fs::write(self.rec.dir.join("MANIFEST.json"), bytes).context("cannot write MANIFEST.json")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.created_dir {
            let _ = std::fs::remove_dir_all(&self.rec.dir);
        } else if let Ok(entries) = std::fs::read_dir(&self.rec.dir) {
            // The directory was the user's (empty): leave it, empty again.
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            }
        }
    }
}
