//! The kernel programs: loading the embedded object with this kernel's offsets and the user's
//! filters, attaching each probe with the best backend the kernel accepts, and detaching.
pub mod casts;
pub mod kfree_skb;
pub mod konst;
pub mod loader;
pub mod netfilter;
pub mod path;
pub mod tc;

use std::fmt;

use anyhow::{Result, bail};
use object::{Object as _, ObjectSection as _, SectionKind};

/// Runs `f` over each code section of the eBPF object `elf`: the passes that rewrite
/// placeholder instructions before it is loaded (`casts`, `konst`).
pub fn each_code_section(elf: &mut [u8], mut f: impl FnMut(&mut [u8]) -> Result<()>) -> Result<()> {
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*elf)?;
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| s.file_range())
            .map(|(at, len)| Ok((usize::try_from(at)?, usize::try_from(len)?)))
            .collect::<Result<_>>()?
    };
    for (at, len) in ranges {
        let Some(code) = elf.get_mut(at..at + len) else { bail!("a code section of the eBPF object lies outside it") };
        f(code)?;
    }
    Ok(())
}

/// How a probe is attached. Chosen by trying, never from the kernel version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpKind {
    /// BTF-typed tracepoint (`tp_btf`, kernel ≥ 5.5 with BTF).
    TpBtf,
    /// Raw tracepoint (`raw_tp`).
    RawTp,
}

impl fmt::Display for TpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TpBtf => "tp_btf",
            Self::RawTp => "raw_tp",
        })
    }
}

/// A load/attach error in one line: the syscall error and the verifier's last words. The full
/// verifier log goes to the debug log (`-vv`), not into the user's error line.
pub fn brief(e: aya::programs::ProgramError) -> anyhow::Error {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log:\n{log}");
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time") && !l.starts_with("stack depth"))
                .unwrap_or("");
            if last.is_empty() {
                anyhow::anyhow!("load failed: {io_error}")
            } else {
                anyhow::anyhow!("load failed: {io_error} (verifier: {last})")
            }
        }
        other => anyhow::Error::new(other),
    }
}
