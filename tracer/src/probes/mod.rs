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
