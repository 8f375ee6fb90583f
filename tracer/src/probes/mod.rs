//! The kernel programs: loading the embedded object with this kernel's offsets and the user's
//! filters, attaching each probe with the best backend the kernel accepts, and detaching.
pub mod kfree_skb;
pub mod loader;
pub mod netfilter;
pub mod path;
pub mod tc;

use std::fmt;

/// How a probe is attached. Chosen by trying, never from the kernel version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// BTF-typed tracepoint (`tp_btf`, kernel ≥ 5.5 with BTF).
    TpBtf,
    /// Raw tracepoint (`raw_tp`).
    RawTp,
}

impl fmt::Display for Backend {
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

/// Times the kernel skipped a program because it was already running on that CPU (a drop
/// inside a drop probe's run, e.g. from an interrupt): those drops were not counted.
pub fn recursion_misses(prog: &aya::programs::ProgramFd) -> anyhow::Result<u64> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    // SAFETY: bpf_prog_info is plain integers; all-zero is its documented initial state.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(prog.as_fd().as_raw_fd())?,
        info_len: u32::try_from(size_of_val(&info))?,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // SAFETY: attr points at a zeroed bpf_prog_info of the size we pass.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, std::ptr::from_mut(&mut attr), size_of::<InfoAttr>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(info.recursion_misses)
}
