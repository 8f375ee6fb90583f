//! apt with a private configuration under `target/vm/`: its own sources list, package lists and
//! cache, so fetching guest kernels (or QEMU from backports) never touches the machine's apt
//! sources. Indexes are still verified against Debian's archive keyring.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd;

pub const MIRROR: &str = "http://deb.debian.org/debian";

pub struct Apt {
    dir: PathBuf,
    /// Use the machine's dpkg status (for installing); otherwise an empty private one, so
    /// resolution ignores what is installed (for downloads).
    system_status: bool,
}

impl Apt {
    /// A private apt in `dir` reading `suites` (main, amd64) from deb.debian.org.
    pub fn new(dir: &Path, suites: &[&str], system_status: bool) -> Result<Self> {
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
        ] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("cannot create {}", dir.join(d).display()))?;
        }
        let list = suites.iter().fold(String::new(), |mut l, s| {
            let _ = writeln!(l, "deb [arch=amd64] {MIRROR} {s} main");
            l
        });
        write_if_changed(&dir.join("etc/sources.list"), &list)?;
        if !dir.join("status").exists() {
            std::fs::write(dir.join("status"), "")?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            system_status,
        })
    }

    fn options(&self) -> Vec<String> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut o = vec![
            format!("Dir::Etc::SourceList={}", d("etc/sources.list")),
            format!("Dir::Etc::SourceParts={}", d("etc/sources.list.d")),
            format!("Dir::Etc::Preferences={}", d("etc/preferences")),
            format!("Dir::Etc::PreferencesParts={}", d("etc/preferences.d")),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            "APT::Architectures::=amd64".into(),
            "Acquire::Languages=none".into(),
            // Downloads land in directories we own; apt's `_apt` user may not write there.
            "APT::Sandbox::User=root".into(),
            "DPkg::Lock::Timeout=600".into(),
        ];
        if !self.system_status {
            o.push(format!("Dir::State::Status={}", d("status")));
        }
        o
    }

    /// `apt-get`/`apt-cache` with the private configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut c = cmd::new(program);
        for o in self.options() {
            c.arg("-o").arg(o);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// `apt-get update` unless the lists are younger than `max_age`.
    pub fn update(&self, max_age: Duration) -> Result<()> {
        let stamp = self.dir.join("lists/.updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < max_age);
        if fresh {
            return Ok(());
        }
        cmd::run(self.command("apt-get").args(["update", "-q"]))?;
        std::fs::write(&stamp, "")?;
        Ok(())
    }

    /// `(package, version)` of every stanza `apt-cache show` prints for `names`.
    pub fn versions(&self, names: &[String]) -> Result<Vec<(String, String)>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .command("apt-cache")
            .arg("show")
            .args(names)
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "`apt-cache show {}` failed: {}",
                names.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(parse_stanzas(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Package names starting with `prefix` (`apt-cache pkgnames`).
    pub fn names(&self, prefix: &str) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["pkgnames", prefix])
            .output()
            .context("cannot run apt-cache")?;
        // pkgnames exits 0 with nothing when no name matches.
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }
}

fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        // New sources: the lists must be fetched again.
        let _ = std::fs::remove_file(
            path.parent()
                .and_then(Path::parent)
                .unwrap_or(path)
                .join("lists/.updated"),
        );
    }
    Ok(())
}

fn parse_stanzas(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut pkg, mut ver) = (None, None);
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if let (Some(p), Some(v)) = (pkg.take(), ver.take()) {
                out.push((p, v));
            }
            pkg = None;
            ver = None;
        } else if let Some(p) = line.strip_prefix("Package: ") {
            pkg = Some(p.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version: ") {
            ver = Some(v.trim().to_string());
        }
    }
    out
}

/// Debian version order (`dpkg --compare-versions a gt b`).
pub fn newer(a: &str, b: &str) -> bool {
    cmd::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanzas() {
        let text = "Package: linux-image-6.1.0-50-cloud-amd64\nSource: linux\nVersion: 6.1.176-1\nDepends: x\n\n\
                    Package: linux-image-cloud-amd64\nVersion: 6.12.95-1~bpo12+1\n";
        assert_eq!(
            parse_stanzas(text),
            vec![
                (
                    "linux-image-6.1.0-50-cloud-amd64".into(),
                    "6.1.176-1".into()
                ),
                ("linux-image-cloud-amd64".into(), "6.12.95-1~bpo12+1".into())
            ]
        );
    }
}
