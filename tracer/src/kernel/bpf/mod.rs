//! Every raw `bpf(2)` call of the tracer, in one place, for what aya does not do for us: aya
//! has no netfilter program type and loads whole objects, while the feature probes need a
//! two-instruction program of each type with the plain errno the kernel answers, the netfilter
//! observers a dozen hand-assembled instructions, and the tc observers links made inside a
//! pod's namespace on a helper thread. Where aya has the call (`query_tcx`, `enable_stats`,
//! program info), the callers use aya. Returned fds own what they name: closing them unloads
//! or detaches, so nothing outlives us.
//!
//! Attribute layouts follow `include/uapi/linux/bpf.h` and `perf_event.h`; the structs are
//! prefixes of the kernel's unions (the kernel zero-extends a shorter `size`).
mod info;
mod link;
mod load;

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

pub use info::{ProgInfo, prog_exists, prog_info, recursion_misses};
pub use link::{attach_perf_kprobe, attach_perf_tracepoint, link_netfilter, link_tcx, raw_tracepoint_open};
pub use load::{LoadError, ProgSpec, load};

// enum bpf_cmd
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_GET_FD_BY_ID: u32 = 13;
const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
const BPF_BTF_GET_FD_BY_ID: u32 = 19;
const BPF_LINK_CREATE: u32 = 28;

// enum bpf_prog_type (stable uapi numbering)
pub const PROG_KPROBE: u32 = 2;
pub const PROG_SCHED_CLS: u32 = 3;
pub const PROG_TRACEPOINT: u32 = 5;
pub const PROG_RAW_TRACEPOINT: u32 = 17;
pub const PROG_TRACING: u32 = 26;
pub const PROG_NETFILTER: u32 = 32;

// enum bpf_attach_type
pub const ATTACH_TRACE_RAW_TP: u32 = 23;
pub const ATTACH_TRACE_FENTRY: u32 = 24;
pub const ATTACH_NETFILTER: u32 = 45;
const ATTACH_TCX_INGRESS: u32 = 46;
const ATTACH_TCX_EGRESS: u32 = 47;


/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high nibble.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self { code, regs: (src << 4) | dst, off, imm }
    }

    /// `r0 = ret; exit` (`BPF_ALU64 | BPF_MOV | BPF_K`, `BPF_JMP | BPF_EXIT`).
    pub const fn returning(ret: i32) -> [Self; 2] {
        [Self::new(0xb7, 0, 0, 0, ret), Self::new(0x95, 0, 0, 0, 0)]
    }
}

/// `bpf(cmd, attr, sizeof attr)`: the one place the tracer enters the syscall.
pub(crate) fn syscall<T>(cmd: u32, attr: &mut T) -> io::Result<i64> {
    let size = u32::try_from(size_of::<T>()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    // SAFETY: `attr` is a live, properly laid out prefix of `union bpf_attr` of `size` bytes,
    // and every pointer inside it points to memory that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, libc::c_long::from(cmd), std::ptr::from_mut(attr).cast::<libc::c_void>(), libc::c_long::from(size)) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// A command that returns a new file descriptor, which the caller then owns.
fn syscall_fd<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = i32::try_from(syscall(cmd, attr)?).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: these commands return a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: &impl std::os::fd::AsFd) -> u32 {
    fd.as_fd().as_raw_fd().cast_unsigned()
}

/// `EPERM (Operation not permitted)`: the errno's name first, since that is what people search.
pub fn errno_text(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(524) => "ENOTSUPP",
        _ => return e.to_string(),
    };
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name} ({text})")
}
