//! `BPF_PROG_LOAD` of hand-assembled instructions (feature probes, netfilter observers, the
//! filter's differential test).
use std::{io, os::fd::OwnedFd};

use super::{BPF_PROG_LOAD, Insn, errno_text, syscall_fd};

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
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_btf_obj_fd: u32,
    pad: u32,
}

/// What to load: program type, expected attach type, BTF target and kernel version.
#[derive(Default, Clone, Copy)]
pub struct ProgSpec {
    pub prog_type: u32,
    pub expected_attach_type: u32,
    pub attach_btf_id: u32,
    pub kern_version: u32,
}

/// A `bpf(2)` error with the verifier's last line when there is one.
#[derive(Debug)]
pub struct LoadError {
    pub errno: io::Error,
    pub verifier: String,
    /// The whole verifier log (for debug output).
    pub log: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&errno_text(&self.errno))?;
        if !self.verifier.is_empty() {
            write!(f, " (verifier: {})", self.verifier)?;
        }
        Ok(())
    }
}

/// Loads `insns` as a GPL program named `name` (the kernel keeps 15 bytes of it), keeping up
/// to `log_size` bytes of verifier log for the error.
pub fn load(spec: &ProgSpec, name: &str, insns: &[Insn], log_size: u32) -> Result<OwnedFd, LoadError> {
    let too_big = || LoadError { errno: io::Error::from_raw_os_error(libc::E2BIG), verifier: String::new(), log: String::new() };
    let license = c"GPL";
    let mut log = vec![0u8; usize::try_from(log_size).map_err(|_| too_big())?];
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = ProgLoadAttr {
        prog_type: spec.prog_type,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| too_big())?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: spec.kern_version,
        prog_name,
        expected_attach_type: spec.expected_attach_type,
        attach_btf_id: spec.attach_btf_id,
        ..ProgLoadAttr::default()
    };
    syscall_fd(BPF_PROG_LOAD, &mut attr).map_err(|errno| {
        let log = String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
        let verifier = log.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
        LoadError { errno, verifier, log }
    })
}
