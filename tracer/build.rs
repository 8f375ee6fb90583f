//! Builds `tracer-ebpf` for `bpfel-unknown-none` and leaves the object in `OUT_DIR`, where
//! `include_bytes_aligned!` embeds it into the `tracer` binary.
use std::env;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&root).join("../tracer-ebpf");
    let ebpf_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    // The eBPF crate needs `-Z build-std=core`: allowed on a stable toolchain by
    // RUSTC_BOOTSTRAP, so a plain `cargo build --release` works without nightly.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    // Build with the toolchain that runs us (rustup sets RUSTUP_TOOLCHAIN), not "nightly".
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    aya_build::build_ebpf(
        [Package { name: "tracer-ebpf", root_dir: ebpf_dir, ..Default::default() }],
        Toolchain::Custom(&toolchain),
    )
    .context("building the eBPF programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)")
}
