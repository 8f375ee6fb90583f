//! `cargo xtask image`: the tracer's container image, built without any registry: a Debian
//! root filesystem from mmdebstrap (rootfs.rs), rewritten to a root-owned, setuid-free layer
//! with the stripped release binary (layer.rs), written as an OCI layout plus Docker's
//! manifest.json in one tar (archive.rs) that `podman load`, `ctr images import` and
//! `docker load` accept, tagged `tracer:<version>`.
mod archive;
mod layer;
mod rootfs;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, setup};

use archive::Meta;

/// The compressed size the image should stay under (reported, not enforced).
const SIZE_GOAL: u64 = 80 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// Write the archive here [default: target/image/tracer-<version>.oci.tar].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The `org.opencontainers.image.source` label [default: the URL of git remote `origin`].
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    setup::run()?;
    let bin = build::release_binary()?;
    let (path, _) = build_image(&bin, args.out.as_deref(), args.source.as_deref())?;
    // The path alone on stdout, for scripts (`podman load -i "$(cargo xtask image)"`).
    println!("{}", path.display());
    Ok(())
}

/// Builds the image from `bin`; returns the archive's path and the tag.
pub fn build_image(bin: &Path, out: Option<&Path>, source: Option<&str>) -> Result<(PathBuf, String)> {
    if !cmd::is_root() {
        bail!("cargo xtask image needs root (mmdebstrap's root mode keeps the tree's ownership exact); run it with sudo");
    }
    let start = Instant::now();
    let meta = meta(bin, source)?;
    let dir = cmd::target_dir()?.join("image");
    let work = dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let out = out.map_or_else(|| dir.join(format!("tracer-{}.oci.tar", meta.version)), Path::to_path_buf);

    let epoch = commit_epoch()?;
    let rootfs = work.join("rootfs.tar");
    rootfs::build(&rootfs, epoch)?;
    cmd::step(format!("image: root filesystem in {:.0} s", start.elapsed().as_secs_f64()));

    // Debug info is most of the release binary (profile.release has debug = 1); the symbols
    // stay, so a backtrace still names functions.
    let stripped = work.join("tracer");
    cmd::run(cmd::new("objcopy").arg("--strip-debug").arg(bin).arg(&stripped))?;

    let blob = work.join("layer.tar.gz");
    let layer = layer::write(&rootfs, &stripped, u64::try_from(epoch).unwrap_or(0), &blob)?;
    cmd::step(format!("image: layer {} ({} entries, {} device nodes left out)", layer.digest, layer.entries, layer.skipped));
    archive::write(&out, &meta, &layer, &blob)?;
    let _ = std::fs::remove_dir_all(&work);

    let size = std::fs::metadata(&out)?.len();
    #[expect(clippy::cast_precision_loss, reason = "a size in MiB for people")]
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    cmd::step(format!(
        "image: {} ({}, revision {}): {:.1} MiB compressed (goal < {:.0} MiB: {}) in {:.0} s",
        out.display(),
        meta.tag(),
        meta.revision,
        mib(size),
        mib(SIZE_GOAL),
        if size < SIZE_GOAL { "met" } else { "NOT met" },
        start.elapsed().as_secs_f64()
    ));
    Ok((out, meta.tag()))
}

/// Version from the binary itself (`tracer 0.1.0`), revision and time from git.
fn meta(bin: &Path, source: Option<&str>) -> Result<Meta> {
    let v = cmd::probe(cmd::new(bin).arg("--version")).with_context(|| format!("{} --version failed", bin.display()))?;
    let version = v.split_whitespace().nth(1).with_context(|| format!("cannot read a version from `{}`", v.trim()))?.to_string();
    let commit = git(&["rev-parse", "HEAD"])?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    let created = git(&["log", "-1", "--format=%cI"])?;
    // No URL is made up: without --source or an `origin` remote the label is left out.
    let source = source.map(String::from).or_else(|| git(&["remote", "get-url", "origin"]).ok().filter(|s| !s.is_empty()));
    if source.is_none() {
        cmd::step("image: warning: no git remote `origin` and no --source: the image has no org.opencontainers.image.source label");
    }
    Ok(Meta { version, revision: if dirty { format!("{commit}-dirty") } else { commit }, source, created })
}

fn commit_epoch() -> Result<i64> {
    git(&["log", "-1", "--format=%ct"])?.parse().context("git log gave no commit time")
}

fn git(args: &[&str]) -> Result<String> {
    let out = cmd::new("git").current_dir(cmd::root()).args(args).output().context("cannot run git")?;
    if !out.status.success() {
        bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
