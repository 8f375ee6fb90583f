//! The few raw `bpf(2)` and `perf_event_open(2)` calls aya does not make for us: aya has no
//! netfilter program type and loads whole objects, while the feature probes need a
//! two-instruction program of each type with the plain errno the kernel answers, and the
//! netfilter observers a dozen hand-assembled instructions. Returned fds own what they name:
//! closing them unloads or detaches, so nothing outlives us.
//!
//! Attribute layouts follow `include/uapi/linux/bpf.h` and `perf_event.h`; the structs below
//! are prefixes of the kernel's unions (the kernel zero-extends a shorter `size`).
use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

// enum bpf_cmd
const BPF_PROG_LOAD: u32 = 5;
const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
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
pub const ATTACH_TCX_INGRESS: u32 = 46;

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `PERF_ATTR_SIZE_VER1`: up to `config2`.
const PERF_ATTR_SIZE: u32 = 72;

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

#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target: u32,
    attach_type: u32,
    flags: u32,
    // Per-attach-type union: netfilter {pf, hooknum, priority, flags}; tcx {relative_fd, pad,
    // expected_revision}.
    extra: [u32; 4],
}

#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
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

fn sys_bpf<T>(cmd: u32, attr: &mut T) -> io::Result<OwnedFd> {
    let size = u32::try_from(size_of::<T>()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    // SAFETY: `attr` is a live, properly laid out prefix of `union bpf_attr` of `size` bytes,
    // and every pointer inside it points to memory that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, libc::c_long::from(cmd), std::ptr::from_mut(attr).cast::<libc::c_void>(), libc::c_long::from(size)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: these commands return a new file descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    sys_bpf(BPF_PROG_LOAD, &mut attr).map_err(|errno| {
        let log = String::from_utf8_lossy(log.split(|b| *b == 0).next().unwrap_or_default()).into_owned();
        let verifier = log.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string();
        LoadError { errno, verifier, log }
    })
}

/// `BPF_RAW_TRACEPOINT_OPEN`: by name for `raw_tp`, with no name for BTF-typed programs
/// (`tp_btf`, fentry), which carry their target in `attach_btf_id`.
pub fn raw_tracepoint_open(prog: &OwnedFd, name: Option<&CStr>) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: fd_u32(prog),
        pad: 0,
    };
    sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

/// `BPF_LINK_CREATE` for a tcx hook on `ifindex`.
pub fn link_tcx(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr { prog_fd: fd_u32(prog), target: ifindex, attach_type, ..LinkCreateAttr::default() };
    sys_bpf(BPF_LINK_CREATE, &mut attr)
}

/// `BPF_LINK_CREATE` for a netfilter hook (`pf`, `hooknum`, `priority`) in the calling
/// thread's network namespace.
pub fn link_netfilter(prog: &OwnedFd, pf: u32, hooknum: u32, priority: i32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog),
        attach_type: ATTACH_NETFILTER,
        extra: [pf, hooknum, priority.cast_unsigned(), 0],
        ..LinkCreateAttr::default()
    };
    sys_bpf(BPF_LINK_CREATE, &mut attr)
}

/// Opens a perf event for tracepoint `id` on CPU 0 and hands it `prog`.
pub fn attach_perf_tracepoint(prog: &OwnedFd, id: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr { type_: PERF_TYPE_TRACEPOINT, size: PERF_ATTR_SIZE, config: id, sample_period: 1, wakeup_events: 1, ..PerfEventAttr::default() };
    attach_perf(prog, &attr)
}

/// Opens a kprobe perf event (dynamic PMU `pmu_type`) on `func` and hands it `prog`.
pub fn attach_perf_kprobe(prog: &OwnedFd, pmu_type: u32, func: &CStr) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: pmu_type,
        size: PERF_ATTR_SIZE,
        sample_period: 1,
        wakeup_events: 1,
        config1: func.as_ptr() as u64,
        ..PerfEventAttr::default()
    };
    attach_perf(prog, &attr)
}

fn attach_perf(prog: &OwnedFd, attr: &PerfEventAttr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid PERF_ATTR_SIZE_VER1 perf_event_attr; pid -1 / cpu 0 / no group.
    let r = unsafe { libc::syscall(libc::SYS_perf_event_open, std::ptr::from_ref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: perf_event_open returned a new descriptor we own.
    let event = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SET_BPF takes the program fd by value; both descriptors are open.
    let r = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(event)
}

fn fd_u32(fd: &OwnedFd) -> u32 {
    fd.as_raw_fd().cast_unsigned()
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
