//! `cargo xtask build`: setup, then the release binary with the eBPF object embedded
//! (tracer/build.rs compiles the kernel side).
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::{cmd, setup};

/// Setup, then build; returns the absolute path of `target/release/tracer`.
pub fn run() -> Result<PathBuf> {
    setup::run()?;
    release_binary()
}

/// Builds `target/release/tracer` (no setup) and returns its absolute path.
pub fn release_binary() -> Result<PathBuf> {
    cmd::run_cargo(cmd::cargo().args(["build", "--release", "-p", "tracer"]))?;
    let bin = cmd::target_dir()?.join("release").join("tracer");
    if !bin.is_file() {
        bail!("the build succeeded but {} is missing", bin.display());
    }
    cmd::step(format!("build: {}", bin.display()));
    Ok(bin)
}
