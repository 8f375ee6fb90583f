//! `cargo xtask fuzz [--target T] [--seconds N]`: runs the cargo-fuzz targets of `fuzz/` (the
//! parsers and interpreters tracer owns), each for N seconds, and reports executions and
//! crashes. Seeds are in `fuzz/corpus/<target>/` (committed); what libFuzzer finds beyond them
//! goes to `fuzz/target/corpus/<target>/`, so a run leaves the repository as it was. Not part of
//! `cargo xtask test`. Needs the nightly toolchain and cargo-fuzz: installed here when missing.
use std::{path::Path, process::Stdio, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

#[derive(clap::Args)]
pub struct Args {
    /// Only this target (see `fuzz/Cargo.toml`); default: every target.
    #[arg(long)]
    target: Option<String>,
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    ensure_tools()?;
    let fuzz = cmd::root().join("fuzz");
    let listed = cmd::probe(nightly_fuzz().arg("list")).context("`cargo +nightly fuzz list` failed")?;
    let all: Vec<String> = listed.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    let targets: Vec<String> = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t}; targets: {}", all.join(", ")),
        None => all,
    };
    cmd::step("fuzz: building the targets (nightly, sanitizer instrumentation)");
    cmd::run_cargo(nightly_fuzz().arg("build")).context("building the fuzz targets failed")?;
    let logs = fuzz.join("target/logs");
    std::fs::create_dir_all(&logs)?;
    let mut rows = Vec::new();
    let mut crashed = Vec::new();
    for t in &targets {
        let scratch = fuzz.join("target/corpus").join(t);
        std::fs::create_dir_all(&scratch)?;
        let log = logs.join(format!("{t}.log"));
        let mut c = nightly_fuzz();
        c.args(["run", t])
            .arg(&scratch)
            .arg(fuzz.join("corpus").join(t))
            .args(["--", &format!("-max_total_time={}", args.seconds), "-timeout=10", "-print_final_stats=1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        cmd::step(format!("fuzz: {t} for {} s (log: {})", args.seconds, log.display()));
        let status = c.status().with_context(|| format!("cannot run cargo fuzz for {t}"))?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let runs = executions(&text);
        if status.success() {
            rows.push((t.clone(), runs, "none".to_string()));
        } else {
            let artifact = text.lines().find_map(|l| l.split("Test unit written to ").nth(1)).unwrap_or("(see log)").to_string();
            eprintln!("{}", tail(&text, 30));
            rows.push((t.clone(), runs, format!("CRASH {artifact}")));
            crashed.push(t.clone());
        }
    }
    eprintln!("\n{:<20} {:>14} {:>10}  crashes", "target", "executions", "exec/s");
    for (t, runs, crash) in &rows {
        let per_s = runs.map_or_else(|| "?".into(), |r| format!("{}", r / args.seconds.max(1)));
        eprintln!("{t:<20} {:>14} {per_s:>10}  {crash}", runs.map_or_else(|| "?".into(), |r| r.to_string()));
    }
    cmd::step(format!("fuzz: done in {:.0} s", start.elapsed().as_secs_f64()));
    if !crashed.is_empty() {
        bail!("crashes in {}: reproduce with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/<file>`", crashed.join(", "));
    }
    Ok(())
}

/// `cargo +nightly fuzz`, from the workspace root (cargo-fuzz finds `fuzz/` there).
fn nightly_fuzz() -> std::process::Command {
    let mut c = cmd::new("cargo");
    c.args(["+nightly", "fuzz"]).current_dir(cmd::root());
    c
}

/// libFuzzer's `stat::number_of_executed_units` (or its "Done N runs" line).
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:").map(|v| v.trim().parse().ok()))
        .flatten()
        .or_else(|| log.lines().rev().find_map(|l| l.strip_prefix("Done ").and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok())))
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The nightly toolchain (with rust-src: the eBPF object of the `tracer` dependency builds
/// with `-Z build-std`) and cargo-fuzz, installed when missing.
fn ensure_tools() -> Result<()> {
    let toolchains = cmd::probe(cmd::new("rustup").args(["toolchain", "list"])).unwrap_or_default();
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        cmd::run(cmd::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal", "--component", "rust-src"]))?;
    }
    let components = cmd::probe(cmd::new("rustup").args(["+nightly", "component", "list", "--installed"])).unwrap_or_default();
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        cmd::run(cmd::new("rustup").args(["+nightly", "component", "add", "rust-src"]))?;
    }
    if cmd::probe(cmd::new("cargo").args(["+nightly", "fuzz", "--version"])).is_none() {
        cmd::run(cmd::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    if !Path::new(&cmd::root().join("fuzz/Cargo.toml")).exists() {
        bail!("no fuzz/Cargo.toml under {}", cmd::root().display());
    }
    Ok(())
}
