//! Attaching: raw tracepoints (and BTF-typed programs), `BPF_LINK_CREATE` for tcx and
//! netfilter hooks, and perf events for tracepoint and kprobe programs.
use std::{
    ffi::CStr,
    io,
    os::fd::{AsFd, AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{ATTACH_NETFILTER, ATTACH_TCX_EGRESS, ATTACH_TCX_INGRESS, BPF_LINK_CREATE, BPF_RAW_TRACEPOINT_OPEN, fd_u32, syscall_fd};

const BPF_F_BEFORE: u32 = 1 << 3;
const BPF_F_AFTER: u32 = 1 << 4;
const BPF_F_ID: u32 = 1 << 5;

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// `_IOW('$', 8, __u32)`
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
/// `PERF_ATTR_SIZE_VER1`: up to `config2`.
const PERF_ATTR_SIZE: u32 = 72;

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
    // Per-attach-type union: netfilter {pf, hooknum, priority, flags}; tcx {relative_fd or
    // relative_id, pad, expected_revision}.
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

/// `BPF_RAW_TRACEPOINT_OPEN`: by name for `raw_tp`, with no name for BTF-typed programs
/// (`tp_btf`, fentry), which carry their target in `attach_btf_id`.
pub fn raw_tracepoint_open(prog: &impl AsFd, name: Option<&CStr>) -> io::Result<OwnedFd> {
    let mut attr = RawTracepointAttr {
        name: name.map_or(0, |n| n.as_ptr() as u64),
        prog_fd: fd_u32(prog),
        pad: 0,
    };
    syscall_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

/// `BPF_LINK_CREATE` on the tcx hook of `ifindex` in the calling thread's namespace: just
/// before program `before` when given, else after every program there. (aya's
/// `attach_with_options` links in the calling thread and keeps the link in the `Ebpf`; ours are
/// made on a thread inside the pod's namespace and owned by the observers.)
pub fn link_tcx(prog: &impl AsFd, ifindex: u32, egress: bool, before: Option<u32>) -> io::Result<OwnedFd> {
    let (flags, relative_id) = match before {
        Some(id) => (BPF_F_BEFORE | BPF_F_ID, id),
        None => (BPF_F_AFTER, 0),
    };
    let attach_type = if egress { ATTACH_TCX_EGRESS } else { ATTACH_TCX_INGRESS };
    // tcx union: {relative_fd or relative_id, pad, expected_revision}.
    let mut attr = LinkCreateAttr { prog_fd: fd_u32(prog), target: ifindex, attach_type, flags, extra: [relative_id, 0, 0, 0] };
    syscall_fd(BPF_LINK_CREATE, &mut attr)
}

/// `BPF_LINK_CREATE` for a netfilter hook (`pf`, `hooknum`, `priority`) in the calling
/// thread's network namespace.
pub fn link_netfilter(prog: &impl AsFd, pf: u32, hooknum: u32, priority: i32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog),
        attach_type: ATTACH_NETFILTER,
        extra: [pf, hooknum, priority.cast_unsigned(), 0],
        ..LinkCreateAttr::default()
    };
    syscall_fd(BPF_LINK_CREATE, &mut attr)
}

/// Opens a perf event for tracepoint `id` on CPU 0 and hands it `prog`.
pub fn attach_perf_tracepoint(prog: &impl AsFd, id: u64) -> io::Result<OwnedFd> {
    let attr = PerfEventAttr { type_: PERF_TYPE_TRACEPOINT, size: PERF_ATTR_SIZE, config: id, sample_period: 1, wakeup_events: 1, ..PerfEventAttr::default() };
    attach_perf(prog, &attr)
}

/// Opens a kprobe perf event (dynamic PMU `pmu_type`) on `func` and hands it `prog`.
pub fn attach_perf_kprobe(prog: &impl AsFd, pmu_type: u32, func: &CStr) -> io::Result<OwnedFd> {
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

fn attach_perf(prog: &impl AsFd, attr: &PerfEventAttr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid PERF_ATTR_SIZE_VER1 perf_event_attr; pid -1 / cpu 0 / no group.
    let r = unsafe { libc::syscall(libc::SYS_perf_event_open, std::ptr::from_ref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: perf_event_open returned a new descriptor we own.
    let event = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SET_BPF takes the program fd by value; both descriptors are open.
    let r = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_fd().as_raw_fd()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(event)
}
