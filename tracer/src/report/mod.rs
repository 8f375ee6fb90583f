//! `tracer report INPUT... -o report.html [--markdown report.md] [--title TEXT]`: one
//! self-contained HTML page (and Markdown) from capture directories and bundles (one node
//! each; several inputs make a multi-node report). Reads only the tool's output files.
pub mod charts;
pub mod event;
pub mod html;
pub mod markdown;
pub mod model;
pub mod sentences;
pub mod source;
pub mod state;
pub mod tables;

use std::{
    io::{BufRead, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use self::model::{Node, Report};
use crate::args::ReportArgs;

/// Reads one INPUT into a node.
pub fn load(path: &Path) -> Result<Node> {
    let mut node = Node::new(String::new());
    let mut on_events = |r: &mut dyn BufRead| -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = r.read_line(&mut line).with_context(|| format!("{}: cannot read the drop events", path.display()))?;
            if n == 0 {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<event::Event>(&line) {
                Ok(e) => node.add(e),
                Err(_) => node.unreadable += 1,
            }
        }
        Ok(())
    };
    let input = source::read(path, &mut on_events)?;
    node.name.clone_from(&input.name);
    for row in &mut node.rows {
        row.node.clone_from(&input.name);
    }
    node.attach(&input);
    Ok(node)
}

/// Loads every input; nothing is written unless all of them read.
pub fn build(inputs: &[PathBuf], title: Option<String>) -> Result<Report> {
    if inputs.is_empty() {
        bail!("no INPUT: give a capture directory, a bundle directory or a bundle .tar.zst");
    }
    let nodes = inputs.iter().map(|p| load(p)).collect::<Result<Vec<_>>>()?;
    let names = nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    let title = title.unwrap_or_else(|| format!("Packet drops on {names}"));
    Ok(Report { title, nodes })
}

/// Writes `text` to `path` through a temporary name in the same directory.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}; check the directory exists and is writable", path.display());
    }
    Ok(())
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let report = build(&args.inputs, args.title.clone())?;
    let page = html::render(&report);
    let md = args.markdown.as_ref().map(|_| markdown::render(&report));
    write_atomic(&args.output, &page)?;
    if let (Some(p), Some(md)) = (&args.markdown, md)
        && let Err(e) = write_atomic(p, &md)
    {
        let _ = std::fs::remove_file(&args.output);
        return Err(e);
    }
    Ok(())
}

/// `capture --bundle`: `report.html` in the bundle directory (before it is packed).
pub fn write_into_bundle(dir: &Path) -> Result<()> {
    let report = build(&[dir.to_path_buf()], None)?;
    write_atomic(&dir.join("report.html"), &html::render(&report))
}

#[cfg(test)]
mod tests;
