//! Builds the test-only tc programs (`fixtures-ebpf`) for `bpfel-unknown-none` into `OUT_DIR`, where
//! the `tc-fixture` binary embeds them.
use std::env;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    our_map_names()?;
    let dir = std::path::Path::new(&root).join("fixtures-ebpf");
    let dir = dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    // Same arrangement as tracer/build.rs: `-Z build-std=core` on the running (stable)
    // toolchain, allowed by RUSTC_BOOTSTRAP.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    aya_build::build_ebpf(
        [Package { name: "fixtures-ebpf", root_dir: dir, ..Default::default() }],
        Toolchain::Custom(&toolchain),
    )
    .context("building the test eBPF fixtures (run `cargo xtask setup` if bpf-linker or rust-src is missing)")
}

/// The names of the maps tracer-ebpf declares (tracer-common's `names::MAPS`, which
/// `tracer/tests/object.rs` checks against the built object) into `OUT_DIR/our_maps.rs`, so the
/// robust tests know them where the sources are absent (the kernel guests of `cargo xtask
/// vm-test`).
fn our_map_names() -> anyhow::Result<()> {
    let out = std::path::Path::new(&env::var("OUT_DIR").context("OUT_DIR")?).join("our_maps.rs");
    let names: Vec<&str> = tracer_common::names::MAPS.to_vec();
    std::fs::write(&out, format!("&{names:?}"))?;
    Ok(())
}
