//! `cargo xtask test`: the whole suite, as CI runs it. Setup and the release build first,
//! then the host unit tests, then the integration tests against the built binary (they read
//! its path from `TRACER_BIN`). The first failure stops the run with a non-zero exit.
use std::time::Instant;

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
    cmd::run_cargo(cmd::cargo().env("TRACER_BIN", &bin).args([
        "test",
        "-p",
        INTEGRATION,
        "--release",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]))
    .context("integration tests failed")?;

    cmd::step(format!(
        "test: all passed in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}
