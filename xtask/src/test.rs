//! `cargo xtask test`: the whole suite, as CI runs it. Setup and the release build first,
//! then the container image (`cargo xtask image`), then the host unit tests, then the
//! integration tests against the built binary and image (they read their paths from
//! `TRACER_BIN` and `TRACER_IMAGE`), suite by suite with the time each took. A failing unit test
//! stops the run; every integration suite runs, and any failure makes the exit non-zero.
use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, image};

use crate::cmd::EBPF_CRATES as NOT_HOST;
/// Run separately, in release, one test at a time (they share the kernel's drop tracepoint).
const INTEGRATION: &str = "integration-tests";

#[derive(clap::Args)]
pub struct Args {
    /// Run the integration tests with one busy thread pinned to each CPU (a slow machine on
    /// purpose: tests must wait for events, not for a fixed time).
    #[arg(long)]
    cpu_hog: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let bin = build::run()?;
    if !cmd::is_root() {
        cmd::step(
            "test: warning: not root; the integration tests load eBPF programs and create namespaces, they need root",
        );
    }

    cmd::step(format!("test: set-up and release build took {:.0} s", start.elapsed().as_secs_f64()));
    // The image suite runs it under podman; building it needs root, as the suites do.
    let image = if cmd::is_root() {
        let t0 = Instant::now();
        let (path, _) = image::build_image(&bin, None, None).context("building the container image failed")?;
        cmd::step(format!("test: image build took {:.0} s", t0.elapsed().as_secs_f64()));
        Some(path)
    } else {
        cmd::step("test: warning: not root; the container image is not built (the image suite will fail)");
        None
    };
    cmd::step("test: unit tests (host crates)");
    let unit_start = Instant::now();
    let mut unit = cmd::cargo();
    unit.args(["test", "--workspace", "--no-fail-fast"]);
    for p in NOT_HOST.iter().chain([&INTEGRATION]) {
        unit.args(["--exclude", p]);
    }
    cmd::run_cargo(&mut unit).context("unit tests failed")?;
    cmd::step(format!("test: unit tests took {:.0} s", unit_start.elapsed().as_secs_f64()));

    cmd::step(format!(
        "test: integration tests (TRACER_BIN={})",
        bin.display()
    ));
    // Tests that skip (a kernel feature missing) log why here; libtest itself shows them as ok.
    let skips = cmd::target_dir()?.join("testbed-skips.jsonl");
    let _ = std::fs::remove_file(&skips);
    // Built once, then run suite by suite so each one's time shows (CI's budget is in minutes).
    cmd::run_cargo(cmd::cargo().args(["test", "-p", INTEGRATION, "--release", "--no-run"]))
        .context("building the integration tests failed")?;
    let hog = args.cpu_hog.then(crate::hog::Hog::start);
    let mut times = Vec::new();
    let mut failed = Vec::new();
    for suite in suites()? {
        let t0 = Instant::now();
        let mut c = cmd::cargo();
        c.env("TRACER_BIN", &bin)
            .env("TESTBED_SKIP_LOG", &skips)
            .env("TRACER_IMAGE", image.as_deref().unwrap_or(Path::new("")))
            .args(["test", "-p", INTEGRATION, "--release"])
            .args(suite.cargo_args())
            .args(["--", "--test-threads=1"]);
        let ok = cmd::run_cargo(&mut c).is_ok();
        let secs = t0.elapsed().as_secs_f64();
        cmd::step(format!("test: suite {} {} in {secs:.0} s", suite.name(), if ok { "passed" } else { "FAILED" }));
        times.push((suite.name().to_string(), secs, ok));
        if !ok {
            failed.push(suite.name().to_string());
        }
    }
    drop(hog);
    report_skips(&skips);
    cmd::step("test: time per suite:");
    for (name, secs, ok) in &times {
        cmd::step(format!("test:   {name:<14} {secs:>5.0} s  {}", if *ok { "ok" } else { "FAILED" }));
    }
    if !failed.is_empty() {
        bail!("integration tests failed in: {}", failed.join(", "));
    }

    cmd::step(format!(
        "test: all passed in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// One cargo test target of the integration-tests package.
enum Suite {
    /// The testbed library's and helper binaries' own unit tests.
    Harness,
    /// The testbed library's documentation examples.
    Doc,
    /// `tests/tests/NAME.rs` or `tests/tests/NAME/main.rs`.
    Test(String),
}

impl Suite {
    fn name(&self) -> &str {
        match self {
            Self::Harness => "harness",
            Self::Doc => "doc",
            Self::Test(n) => n,
        }
    }

    fn cargo_args(&self) -> Vec<&str> {
        match self {
            Self::Harness => vec!["--lib", "--bins"],
            Self::Doc => vec!["--doc"],
            Self::Test(n) => vec!["--test", n],
        }
    }
}

/// The integration suites, from the directory cargo discovers them in (sorted: a stable order).
fn suites() -> Result<Vec<Suite>> {
    let dir = cmd::root().join("tests/tests");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".rs") {
            names.push(stem.to_string());
        } else if e.path().join("main.rs").is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok([Suite::Harness, Suite::Doc].into_iter().chain(names.into_iter().map(Suite::Test)).collect())
}

/// Prints the tests that skipped themselves (`integration_tests::skip`), with their reasons,
/// and the expectations tests could not check here (`integration_tests::unchecked`).
fn report_skips(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let entries: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("name"), s("reason"))
        })
        .collect();
    for (_, name, what) in entries.iter().filter(|e| e.0 == "unchecked") {
        cmd::step(format!("test: {name}: not checked on this kernel: {what}"));
    }
    let skips: Vec<(String, String)> = entries
        .into_iter()
        .filter(|e| e.0 == "skip")
        .map(|(_, n, r)| (n, r))
        .collect();
    if skips.is_empty() {
        cmd::step("test: no integration test skipped itself");
        return;
    }
    cmd::step(format!(
        "test: {} integration tests SKIPPED (reported as ok by libtest):",
        skips.len()
    ));
    for (name, reason) in skips {
        cmd::step(format!("test:   {name}: {reason}"));
    }
}
