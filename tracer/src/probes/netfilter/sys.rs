//! Raw `bpf()` calls for netfilter programs and links (BPF_PROG_TYPE_NETFILTER, kernel ≥ 6.4).
//! The returned fds own the program/link: closing them detaches, so nothing outlives us.
use std::os::fd::{FromRawFd as _, OwnedFd};

use anyhow::{Result, bail};

use super::asm::Insn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_NETFILTER: u32 = 32;
const BPF_NETFILTER: u32 = 45;

/// The prefix of `union bpf_attr` that BPF_PROG_LOAD reads (the kernel zero-extends the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `link_create` with its `netfilter` member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    nf_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a valid, initialised prefix of union bpf_attr of the given size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(r).map_err(std::io::Error::other)?) })
}

pub fn load_program(name: &str, insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_NETFILTER,
        insn_cnt: u32::try_from(insns.len())?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len())?,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_NETFILTER,
        ..Default::default()
    };
    for (d, s) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            log::debug!("netfilter observer verifier log:\n{text}");
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!("cannot load a BPF netfilter program: {e} (verifier: {last})")
        }
    }
}

/// Attaches `prog` at (`pf`, `hooknum`, `priority`) in the calling thread's network namespace.
pub fn link_netfilter(prog: &OwnedFd, pf: u32, hooknum: u32, priority: i32) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let mut attr = LinkCreateAttr {
        prog_fd: u32::try_from(prog.as_raw_fd()).map_err(std::io::Error::other)?,
        attach_type: BPF_NETFILTER,
        pf,
        hooknum,
        priority,
        ..Default::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}
