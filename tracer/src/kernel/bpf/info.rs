//! What a loaded program is: whether it is still loaded, its id, full name (from its BTF when
//! the kernel's copy is cut at 15 characters, as bpftool does) and tag, and its recursion
//! misses. aya's `ProgramInfo` has the kernel's short name only.
use std::{
    fmt::Write as _,
    io,
    os::fd::{AsFd, OwnedFd},
};

use aya_obj::generated::{bpf_btf_info, bpf_func_info, bpf_prog_info};

use super::{BPF_BTF_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD, BPF_PROG_GET_FD_BY_ID, fd_u32, syscall, syscall_fd};

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

fn obj_info<T>(fd: &impl AsFd, info: &mut T) -> io::Result<()> {
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(fd),
        info_len: u32::try_from(size_of::<T>()).map_err(io::Error::other)?,
        info: std::ptr::from_mut(info) as u64,
    };
    syscall(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
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
    syscall_fd(BPF_PROG_GET_FD_BY_ID, &mut attr).is_ok()
}

pub fn prog_info(id: u32) -> io::Result<ProgInfo> {
    let mut attr = GetFdById { id, next_id: 0, open_flags: 0 };
    let fd = syscall_fd(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
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
    let btf_fd = syscall_fd(BPF_BTF_GET_FD_BY_ID, &mut attr).ok()?;
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

/// Times the kernel skipped program `prog` because it was already running on that CPU (a drop
/// inside a drop probe's run, e.g. from an interrupt): those drops were not counted.
pub fn recursion_misses(prog: &impl AsFd) -> io::Result<u64> {
    // SAFETY: bpf_prog_info is plain integers; all-zero is its documented initial state.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    obj_info(prog, &mut info)?;
    Ok(info.recursion_misses)
}
