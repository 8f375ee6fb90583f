//! Guest kernels: Debian's `cloud-amd64` images (small, virtio/serial built in, BTF on),
//! downloaded with a private apt (verified indexes), unpacked once under `target/vm/kernels/`.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::ValueEnum;

use super::apt::{self, Apt};
use crate::cmd::{self, step};

/// Where kernel packages come from: 6.1 is bookworm's kernel, 6.12 is in bookworm-backports and
/// is trixie's own (whichever is newer wins, so 6.12 stays available when backports moves on).
const SUITES: &[&str] = &["bookworm", "bookworm-backports", "trixie"];
/// Package lists older than this are fetched again.
const LISTS_MAX_AGE: Duration = Duration::from_hours(12);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Choice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    #[value(name = "all")]
    All,
}

impl Choice {
    pub fn series(self) -> Vec<Series> {
        match self {
            Self::V6_1 => vec![Series::V6_1],
            Self::V6_12 => vec![Series::V6_12],
            Self::All => vec![Series::V6_1, Series::V6_12],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    V6_1,
    V6_12,
}

impl Series {
    pub fn name(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// `linux-image-6.1.0-50-cloud-amd64`, `linux-image-6.12.95+deb12-cloud-amd64`: the series,
    /// then a dot (so 6.1 never matches 6.12), ending in `-cloud-amd64`.
    fn matches(self, package: &str) -> bool {
        package
            .strip_prefix("linux-image-")
            .and_then(|r| r.strip_prefix(self.name()))
            .is_some_and(|r| r.starts_with('.'))
            && package.ends_with("-cloud-amd64")
    }
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub version: String,
    /// `uname -r` of the kernel (the directory under lib/modules).
    pub release: String,
    pub vmlinuz: PathBuf,
    pub config: PathBuf,
    /// `lib/modules/<release>` of the package, with `modules.dep` (depmod run once).
    pub modules: PathBuf,
}

/// The newest package of `series`, downloaded and unpacked (cached). Without network, the newest
/// package already unpacked is used, with a warning.
pub fn fetch(work: &Path, series: Series) -> Result<Kernel> {
    let kernels = work.join("kernels");
    std::fs::create_dir_all(&kernels)?;
    let resolved = resolve(work, series);
    let (package, version) = match resolved {
        Ok(pv) => pv,
        Err(e) => match newest_cached(&kernels, series) {
            Some(cached) => {
                step(format!(
                    "vm: warning: {e:#}; using the cached {} {}",
                    cached.0, cached.1
                ));
                cached
            }
            None => {
                return Err(e.context(format!(
                    "cannot find a {} cloud kernel package and none is cached in {}",
                    series.name(),
                    kernels.display()
                )));
            }
        },
    };
    let dir = kernels.join(format!("{package}_{version}"));
    if !dir.join(".complete").exists() {
        download(work, &package, &version, &dir)?;
    }
    open(&package, &version, &dir)
}

fn resolve(work: &Path, series: Series) -> Result<(String, String)> {
    let apt = Apt::new(&work.join("apt-kernels"), SUITES, false)?;
    apt.update(LISTS_MAX_AGE)?;
    let names: Vec<String> = apt
        .names(&format!("linux-image-{}.", series.name()))?
        .into_iter()
        .filter(|n| series.matches(n))
        .collect();
    let mut best: Option<(String, String)> = None;
    for (p, v) in apt.versions(&names)? {
        if best.as_ref().is_none_or(|(_, bv)| apt::newer(&v, bv)) {
            best = Some((p, v));
        }
    }
    best.ok_or_else(|| {
        anyhow!(
            "no linux-image-{}.*-cloud-amd64 package in {} ({})",
            series.name(),
            SUITES.join(", "),
            apt::MIRROR
        )
    })
}

fn newest_cached(kernels: &Path, series: Series) -> Option<(String, String)> {
    let mut best: Option<(String, String)> = None;
    for e in std::fs::read_dir(kernels).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((p, v)) = name.split_once('_') else {
            continue;
        };
        if series.matches(p)
            && e.path().join(".complete").exists()
            && best.as_ref().is_none_or(|(_, bv)| apt::newer(v, bv))
        {
            best = Some((p.to_string(), v.to_string()));
        }
    }
    best
}

fn download(work: &Path, package: &str, version: &str, dir: &Path) -> Result<()> {
    let debs = work.join("debs");
    std::fs::create_dir_all(&debs)?;
    step(format!("vm: downloading {package} {version}"));
    let apt = Apt::new(&work.join("apt-kernels"), SUITES, false)?;
    cmd::run(apt.command("apt-get").current_dir(&debs).args([
        "download",
        "-q",
        &format!("{package}={version}"),
    ]))?;
    // apt-get names the file with the version's epoch colon escaped; find it by prefix.
    let deb = std::fs::read_dir(&debs)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .ok_or_else(|| {
            anyhow!(
                "apt-get download left no {package}_*.deb in {}",
                debs.display()
            )
        })?;
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    cmd::run(cmd::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    // Merged-/usr packages put modules under usr/lib/modules; depmod -b looks in lib/modules.
    if !tmp.join("lib/modules").exists() && tmp.join("usr/lib/modules").exists() {
        std::os::unix::fs::symlink("usr/lib", tmp.join("lib"))?;
    }
    let release = release_of(&tmp)?;
    cmd::run(cmd::new("depmod").arg("-b").arg(&tmp).arg(&release))?;
    std::fs::write(tmp.join(".complete"), format!("{package} {version}\n"))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir)?;
    let _ = std::fs::remove_file(&deb);
    Ok(())
}

fn release_of(root: &Path) -> Result<String> {
    let mods = root.join("lib/modules");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&mods)
        .with_context(|| format!("no lib/modules in {}", root.display()))?
        .flatten()
    {
        found.push(e.file_name().to_string_lossy().into_owned());
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {found:?}",
            mods.display()
        ),
    }
}

fn open(package: &str, version: &str, dir: &Path) -> Result<Kernel> {
    let release = release_of(dir)?;
    let boot = dir.join("boot");
    let kernel = Kernel {
        package: package.into(),
        version: version.into(),
        vmlinuz: boot.join(format!("vmlinuz-{release}")),
        config: boot.join(format!("config-{release}")),
        modules: dir.join("lib/modules").join(&release),
        release,
    };
    for p in [
        &kernel.vmlinuz,
        &kernel.config,
        &kernel.modules.join("modules.dep"),
    ] {
        if !p.exists() {
            bail!(
                "{} is missing from the unpacked {package}; delete {} and retry",
                p.display(),
                dir.display()
            );
        }
    }
    Ok(kernel)
}

/// `CONFIG_X=…` lines of the kernel's config for `keys` ("-" when unset).
pub fn config_facts(kernel: &Kernel, keys: &[&str]) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(&kernel.config)
        .with_context(|| format!("cannot read {}", kernel.config.display()))?;
    Ok(keys
        .iter()
        .map(|k| {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("-");
            ((*k).to_string(), v.to_string())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_matching() {
        assert!(Series::V6_1.matches("linux-image-6.1.0-50-cloud-amd64"));
        assert!(!Series::V6_1.matches("linux-image-6.12.95+deb12-cloud-amd64"));
        assert!(Series::V6_12.matches("linux-image-6.12.95+deb12-cloud-amd64"));
        assert!(Series::V6_12.matches("linux-image-6.12.57+deb13-cloud-amd64"));
        assert!(!Series::V6_12.matches("linux-image-6.12.57+deb13-cloud-amd64-dbg"));
        assert!(!Series::V6_12.matches("linux-image-6.12.57+deb13-amd64"));
        assert!(!Series::V6_1.matches("linux-image-cloud-amd64"));
    }
}
