//! The bundle as one `.tar.zst` to attach to an incident: written to a temporary name and
//! renamed, so a reader never sees half an archive.
use std::{fs::File, io::Write as _, path::Path};

use anyhow::{Context as _, Result};

/// zstd level: small enough to attach, fast enough not to delay the end of a capture.
const LEVEL: i32 = 9;

/// Packs `dir` (its files under `dir`'s own name) into `archive`.
pub fn pack(dir: &Path, archive: &Path) -> Result<()> {
    let name = dir.file_name().context("the bundle directory has no name")?;
    let mut tmp = archive.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let enc = zstd::Encoder::new(file, LEVEL)?;
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        tar.append_dir_all(name, dir).with_context(|| format!("cannot pack {}", dir.display()))?;
        let enc = tar.into_inner()?;
        let mut file = enc.finish()?;
        file.flush()?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, archive).with_context(|| format!("cannot write {}", archive.display()))
}
