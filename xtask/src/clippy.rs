//! `cargo xtask clippy`: every crate with `-D warnings` (pedantic comes from
//! [workspace.lints]). The eBPF crate is checked for its real target: `-Z build-std=core`
//! on the stable toolchain via `RUSTC_BOOTSTRAP`, like tracer/build.rs builds it. Both runs
//! happen even when the first fails, so one call shows every problem.
use anyhow::{Result, bail};

use crate::{cmd, setup};

pub fn run() -> Result<()> {
    // tracer/build.rs runs during `cargo clippy` too and needs bpf-linker and rust-src.
    setup::run()?;
    setup::ensure_components(&["clippy"])?;

    let host = cmd::run_cargo(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]));
    let ebpf = cmd::run_cargo(cmd::cargo().env("RUSTC_BOOTSTRAP", "1").args([
        "clippy",
        "-p",
        "tracer-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]));
    let failed: Vec<&str> = [("host crates", &host), ("eBPF crate", &ebpf)]
        .into_iter()
        .filter_map(|(name, r)| r.is_err().then_some(name))
        .collect();
    if !failed.is_empty() {
        bail!(
            "clippy found problems in the {} (see above)",
            failed.join(" and the ")
        );
    }
    cmd::step("clippy: clean");
    Ok(())
}
