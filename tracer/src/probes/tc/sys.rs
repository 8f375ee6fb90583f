//! Raw `bpf()` calls for tc attribution: which programs a tcx hook runs (`BPF_PROG_QUERY`), tcx
//! links placed relative to a program (`BPF_LINK_CREATE` with `BPF_F_BEFORE`|`BPF_F_ID`), and what a
//! program is called (`BPF_OBJ_GET_INFO_BY_FD`, with its BTF for names longer than the kernel's
//! 15 characters, as bpftool does). Calls that name an ifindex act in the calling thread's
//! network namespace.
use std::{
    fmt::Write as _,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{bpf_btf_info, bpf_func_info, bpf_prog_info};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_BTF_GET_FD_BY_ID: libc::c_long = 19;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_F_BEFORE: u32 = 1 << 3;
const BPF_F_AFTER: u32 = 1 << 4;
const BPF_F_ID: u32 = 1 << 5;

fn sys<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: attr is an initialised prefix of union bpf_attr of the size we pass; pointers in
    // it point at live buffers of the sizes written next to them.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

fn fd_of(r: i64) -> io::Result<OwnedFd> {
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(r).map_err(io::Error::other)?) })
}

const fn tcx_type(egress: bool) -> u32 {
    if egress { BPF_TCX_EGRESS } else { BPF_TCX_INGRESS }
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// Program ids on the tcx hook of `ifindex`, in the order they run. A kernel without tcx
/// (< 6.6) answers EINVAL: no programs there.
pub fn query_tcx(ifindex: u32, egress: bool) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type: tcx_type(egress),
        prog_ids: ids.as_mut_ptr() as u64,
        count: u32::try_from(ids.len()).map_err(io::Error::other)?,
        ..Default::default()
    };
    match sys(BPF_PROG_QUERY, &mut attr) {
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    ids.truncate(attr.count as usize);
    Ok(ids)
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateTcx {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_id: u32,
    _pad: u32,
    expected_revision: u64,
}

/// Links `prog` into the tcx hook of `ifindex`: just before program `before` when given, else
/// after every program there. Closing the returned fd detaches it.
pub fn link_tcx(prog: &impl std::os::fd::AsFd, ifindex: u32, egress: bool, before: Option<u32>) -> io::Result<OwnedFd> {
    let (flags, relative_id) = match before {
        Some(id) => (BPF_F_BEFORE | BPF_F_ID, id),
        None => (BPF_F_AFTER, 0),
    };
    let mut attr = LinkCreateTcx {
        prog_fd: u32::try_from(prog.as_fd().as_raw_fd()).map_err(io::Error::other)?,
        target_ifindex: ifindex,
        attach_type: tcx_type(egress),
        flags,
        relative_id,
        ..Default::default()
    };
    fd_of(sys(BPF_LINK_CREATE, &mut attr)?)
}

#[repr(C)]
struct GetFdById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn obj_info<T>(fd: &OwnedFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(io::Error::other)?,
        info_len: u32::try_from(size_of::<T>()).map_err(io::Error::other)?,
        info: std::ptr::from_mut(info) as u64,
    };
    sys(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
}

/// A loaded program as bpftool shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    /// Full name (from the program's BTF when the kernel's copy is cut at 15 characters).
    pub name: String,
    /// 16 hex digits.
    pub tag: String,
}

/// True while program `id` is loaded.
pub fn prog_exists(id: u32) -> bool {
    let mut attr = GetFdById { id, next_id: 0, open_flags: 0 };
    sys(BPF_PROG_GET_FD_BY_ID, &mut attr).and_then(fd_of).is_ok()
}

pub fn prog_info(id: u32) -> io::Result<ProgInfo> {
    let mut attr = GetFdById { id, next_id: 0, open_flags: 0 };
    let fd = fd_of(sys(BPF_PROG_GET_FD_BY_ID, &mut attr)?)?;
    // SAFETY: bpf_prog_info is plain integers; all-zero is its documented initial state.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    obj_info(&fd, &mut info)?;
    let short: Vec<u8> = info.name.iter().map(|&c| c.cast_unsigned()).take_while(|&c| c != 0).collect();
    let mut name = String::from_utf8_lossy(&short).into_owned();
    if short.len() == info.name.len() - 1
        && let Some(full) = btf_func_name(&fd, &info)
        && full.starts_with(&name)
    {
        name = full;
    }
    let tag = info.tag.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    Ok(ProgInfo { id: info.id, name, tag })
}

/// The name of the program's main function in its BTF (what bpftool prints for long names).
fn btf_func_name(fd: &OwnedFd, first: &bpf_prog_info) -> Option<String> {
    if first.btf_id == 0 || first.nr_func_info == 0 || first.func_info_rec_size as usize != size_of::<bpf_func_info>() {
        return None;
    }
    let mut funcs = vec![bpf_func_info { insn_off: 0, type_id: 0 }; first.nr_func_info as usize];
    // SAFETY: as above.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    info.nr_func_info = first.nr_func_info;
    info.func_info_rec_size = first.func_info_rec_size;
    info.func_info = funcs.as_mut_ptr() as u64;
    obj_info(fd, &mut info).ok()?;
    let type_id = funcs.iter().find(|f| f.insn_off == 0)?.type_id;

    let mut attr = GetFdById { id: first.btf_id, next_id: 0, open_flags: 0 };
    let btf_fd = fd_of(sys(BPF_BTF_GET_FD_BY_ID, &mut attr).ok()?).ok()?;
    // SAFETY: plain integers.
    let mut bi: bpf_btf_info = unsafe { std::mem::zeroed() };
    obj_info(&btf_fd, &mut bi).ok()?;
    let mut raw = vec![0u8; bi.btf_size as usize];
    // SAFETY: as above.
    let mut bi2: bpf_btf_info = unsafe { std::mem::zeroed() };
    bi2.btf = raw.as_mut_ptr() as u64;
    bi2.btf_size = u32::try_from(raw.len()).ok()?;
    obj_info(&btf_fd, &mut bi2).ok()?;
    let btf = btf_rs::Btf::from_bytes(&raw).ok()?;
    match btf.resolve_type_by_id(type_id).ok()? {
        btf_rs::Type::Func(f) => btf.resolve_name(&f).ok(),
        _ => None,
    }
}
