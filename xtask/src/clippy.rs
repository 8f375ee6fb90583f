//! `cargo xtask clippy`: every crate with `-D warnings` (pedantic comes from
//! [workspace.lints]). The eBPF crate is checked for its real target: `-Z build-std=core`
//! on the stable toolchain via `RUSTC_BOOTSTRAP`, like tracer/build.rs builds it.
use anyhow::{Context as _, Result};

use crate::{cmd, setup};

pub fn run() -> Result<()> {
    // tracer/build.rs runs during `cargo clippy` too and needs bpf-linker and rust-src.
    setup::run()?;
    setup::ensure_components(&["clippy"])?;

    cmd::run_cargo(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems in the host crates")?;

    cmd::run_cargo(cmd::cargo().env("RUSTC_BOOTSTRAP", "1").args([
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
    ]))
    .context("clippy found problems in the eBPF crate")?;
    cmd::step("clippy: clean");
    Ok(())
}
