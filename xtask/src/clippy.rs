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

    let mut host = cmd::cargo();
    host.args(["clippy", "--workspace", "--all-targets"]);
    for c in cmd::EBPF_CRATES {
        host.args(["--exclude", c]);
    }
    let host = cmd::run_cargo(host.args(["--", "-D", "warnings"]));
    let mut ebpf = cmd::cargo();
    ebpf.env("RUSTC_BOOTSTRAP", "1").arg("clippy");
    for c in cmd::EBPF_CRATES {
        ebpf.args(["-p", c]);
    }
    let ebpf = cmd::run_cargo(ebpf.args([
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
