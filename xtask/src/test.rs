//! `cargo xtask test`: the whole suite, as CI runs it. Setup and the release build first,
//! then the host unit tests, then the integration tests against the built binary (they read
//! its path from `TRACER_BIN`). The first failure stops the run with a non-zero exit.
use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result};

use crate::{build, cmd};

use crate::cmd::EBPF_CRATES as NOT_HOST;
/// Run separately, in release, one test at a time (they share the kernel's drop tracepoint).
const INTEGRATION: &str = "integration-tests";

pub fn run() -> Result<()> {
    let start = Instant::now();
    let bin = build::run()?;
    if !cmd::is_root() {
        cmd::step(
            "test: warning: not root; the integration tests load eBPF programs and create namespaces, they need root",
        );
    }

    cmd::step("test: unit tests (host crates)");
    let mut unit = cmd::cargo();
    unit.args(["test", "--workspace", "--no-fail-fast"]);
    for p in NOT_HOST.iter().chain([&INTEGRATION]) {
        unit.args(["--exclude", p]);
    }
    cmd::run_cargo(&mut unit).context("unit tests failed")?;

    cmd::step(format!(
        "test: integration tests (TRACER_BIN={})",
        bin.display()
    ));
    // Tests that skip (a kernel feature missing) log why here; libtest itself shows them as ok.
    let skips = cmd::target_dir()?.join("testbed-skips.jsonl");
    let _ = std::fs::remove_file(&skips);
    let result = cmd::run_cargo(
        cmd::cargo()
            .env("TRACER_BIN", &bin)
            .env("TESTBED_SKIP_LOG", &skips)
            .args([
                "test",
                "-p",
                INTEGRATION,
                "--release",
                "--no-fail-fast",
                "--",
                "--test-threads=1",
            ]),
    );
    report_skips(&skips);
    result.context("integration tests failed")?;

    cmd::step(format!(
        "test: all passed in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
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
