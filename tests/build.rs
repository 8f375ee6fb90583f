//! Builds the test-only tc programs (`fixtures-ebpf`) for `bpfel-unknown-none` into `OUT_DIR`, where
//! the `tc-fixture` binary embeds them.
use std::env;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    our_map_names(&root)?;
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

/// The names of the maps tracer-ebpf declares (`#[map(name = "…")]`), read from its sources
/// into `OUT_DIR/our_maps.rs` so the robust tests know them where the sources are absent (the
/// kernel guests of `cargo xtask vm-test`), and a new map is covered without editing a list.
fn our_map_names(root: &str) -> anyhow::Result<()> {
    let src = std::path::Path::new(root).join("../tracer-ebpf/src");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut names = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))?.flatten() {
        println!("cargo:rerun-if-changed={}", e.path().display());
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for part in text.split("#[map(name = \"").skip(1) {
            names.extend(part.split('"').next().map(String::from));
        }
    }
    anyhow::ensure!(!names.is_empty(), "no #[map(name = …)] found in {}", src.display());
    let out = std::path::Path::new(&env::var("OUT_DIR").context("OUT_DIR")?).join("our_maps.rs");
    let names: Vec<String> = names.into_iter().collect();
    std::fs::write(&out, format!("&{names:?}"))?;
    Ok(())
}
