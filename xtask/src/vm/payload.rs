//! What every guest runs, built once per `vm-test`: the release `tracer`, the integration test
//! executables (from cargo's JSON messages), the `tc-fixture`, `cilium-fixture` and
//! `kernel-probe` helpers. Copies without debug info go to `target/vm/bin/` (smaller
//! initramfs, faster to unpack under TCG).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::cmd;

const PACKAGE: &str = "integration-tests";

pub struct TestBin {
    /// File name in the guest's /vmtest (also how reports name the binary).
    pub name: String,
    pub stripped: PathBuf,
    /// libtest `--skip` arguments: the tests proven on the host only (`host_only.rs`).
    pub skip: Vec<String>,
}

pub struct Payload {
    pub tracer: PathBuf,
    pub tests: Vec<TestBin>,
    /// The fixture (the tests find it through `TC_FIXTURE_BIN` in the guest).
    pub fixture: PathBuf,
    /// The Cilium-like datapath (`CILIUM_FIXTURE_BIN` in the guest).
    pub cilium_fixture: PathBuf,
    pub probe: PathBuf,
}

pub fn build(work: &Path, tracer: &Path) -> Result<Payload> {
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin)?;
    let json_path = work.join("cargo-test-build.json");
    let out = std::fs::File::create(&json_path)?;
    cmd::run_cargo(
        cmd::cargo()
            .args([
                "test",
                "-p",
                PACKAGE,
                "--release",
                "--no-run",
                "--message-format=json-render-diagnostics",
            ])
            .stdout(out),
    )
    .context("building the integration tests failed")?;
    let text = std::fs::read_to_string(&json_path)?;
    let mut tests = Vec::new();
    let (mut fixture, mut cilium_fixture, mut probe) = (None, None, None);
    for msg in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if msg["reason"] != "compiler-artifact"
            || !msg["manifest_path"]
                .as_str()
                .is_some_and(|m| m.ends_with("tests/Cargo.toml"))
        {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        let target = msg["target"]["name"].as_str().unwrap_or_default();
        let kind = msg["target"]["kind"][0].as_str().unwrap_or_default();
        if msg["profile"]["test"] == true {
            // `tests/drops.rs` → drops; the library's and binaries' own unit tests get a prefix.
            let name = if kind == "test" {
                target.to_string()
            } else {
                format!("{kind}-{target}")
            };
            let skip = if kind == "test" {
                super::host_only::skip_args(target, Path::new(exe))?
            } else {
                Vec::new()
            };
            tests.push(TestBin {
                stripped: strip(Path::new(exe), &bin.join(&name))?,
                name,
                skip,
            });
        } else if target == "tc-fixture" {
            fixture = Some(PathBuf::from(exe));
        } else if target == "cilium-fixture" {
            cilium_fixture = Some(PathBuf::from(exe));
        } else if target == "kernel-probe" {
            probe = Some(PathBuf::from(exe));
        }
    }
    if tests.is_empty() {
        bail!(
            "cargo built no test executable for {PACKAGE} (see {})",
            json_path.display()
        );
    }
    // Integration tests first (what a reader looks for), in a stable order.
    tests.sort_by_key(|t| (t.name.contains('-'), t.name.clone()));
    let fixture = fixture.ok_or_else(|| anyhow!("cargo built no tc-fixture"))?;
    let probe = probe.ok_or_else(|| anyhow!("cargo built no kernel-probe"))?;
    let cilium_fixture =
        cilium_fixture.ok_or_else(|| anyhow!("cargo built no cilium-fixture"))?;
    Ok(Payload {
        tracer: strip(tracer, &bin.join("tracer"))?,
        fixture: strip(&fixture, &bin.join("tc-fixture"))?,
        cilium_fixture: strip(&cilium_fixture, &bin.join("cilium-fixture"))?,
        probe: strip(&probe, &bin.join("kernel-probe"))?,
        tests,
    })
}

/// `objcopy --strip-debug src dst` (symbols stay: backtraces and the tracer's own lookups).
fn strip(src: &Path, dst: &Path) -> Result<PathBuf> {
    cmd::run(cmd::new("objcopy").arg("--strip-debug").arg(src).arg(dst))?;
    Ok(dst.to_path_buf())
}
