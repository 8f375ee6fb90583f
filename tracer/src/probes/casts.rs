//! The typed views of packet bytes (tracer-ebpf/src/cast.rs): the object calls a made-up
//! helper with a made-up type number for each; before the object is loaded they become the
//! `bpf_rdonly_cast` kfunc call and the BTF id of the view's struct, on a kernel that takes
//! that call (found by loading one), or a register move, with `Config::direct_bytes` 0 so the
//! programs copy bytes with `bpf_probe_read_kernel` as before.
use anyhow::Result;
use tracer_common::{
    Offsets,
    cast::{BYTES_TYPE_MAGIC, DIRECT_MAX, DST_TYPE_MAGIC, RDONLY_CAST_MAGIC, SHINFO_TYPE_MAGIC, VOID_TYPE_MAGIC},
};

use crate::kernel::{
    bpf::{self, Insn, ProgSpec},
    btf::KernelBtf,
};

const INSN: usize = size_of::<Insn>();
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_ALU64 | BPF_MOV | BPF_K`, `| BPF_X`.
const MOV_K: u8 = 0xb7;
const MOV_X: u8 = 0xbf;
const LDX_DW: u8 = 0x79;
/// `insn.src_reg` of a kfunc call.
const PSEUDO_KFUNC_CALL: u8 = 2;

/// BTF ids of the kfunc and of the views' structs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub kfunc: u32,
    /// The packet bytes' view.
    pub view: u32,
    /// `dst_entry` and `skb_shared_info`, when the kernel takes the event facts' loads
    /// through them (`Config::direct_facts`).
    pub facts: Option<(u32, u32)>,
    /// The kernel takes `void` (type id 0) for an untyped view loaded at computed offsets
    /// (Linux ≥ 6.17): the compiled filter may read packets in place (`Config::filter_direct`).
    pub void: bool,
}

/// The ids, when this kernel has them and loads a program that calls the kfunc with them and
/// loads through the views as the programs do; the reason why not otherwise (for the log).
pub fn probe(btf: &KernelBtf, o: &Offsets) -> Result<Ids, String> {
    let kfunc = btf.func_id("bpf_rdonly_cast").ok_or("no bpf_rdonly_cast kfunc (Linux < 6.2)")?;
    let view = btf.byte_view_struct(DIRECT_MAX).ok_or("no struct whose first member is an integer array for the view")?;
    // Loads through the view at every word the programs load (`r1 = *(u64 *)(r0 + off)`).
    let mut insns = cast(kfunc, view);
    insns.extend((0..DIRECT_MAX).step_by(8).map(|off| Insn::new(LDX_DW, 1, 0, i16::try_from(off).unwrap_or(0), 0)));
    try_load(&insns).map_err(|e| format!("the kernel refused a bpf_rdonly_cast call: {e}"))?;
    let facts = facts(btf, o, kfunc).inspect_err(|e| log::info!("drop events read their route and GSO facts with bpf_probe_read_kernel: {e}")).ok();
    let void = void(kfunc).inspect_err(|e| log::info!("the compiled filter reads a copy of the packet's bytes: {e}")).is_ok();
    Ok(Ids { kfunc, view, facts, void })
}

/// An untyped view loaded at an offset known only at run time, as the compiled filter's
/// indirect loads do (`r0 = bpf_rdonly_cast(0, 0); r1 = *(u8 *)(r0 + (args[0] & 255))`).
fn void(kfunc: u32) -> Result<(), String> {
    let mut insns = vec![Insn::new(LDX_DW, 6, 1, 0, 0), Insn::new(0x57, 6, 0, 0, 255)]; // r6 = args[0] & 255
    insns.extend(cast(kfunc, 0));
    insns.push(Insn::new(0x0f, 0, 6, 0, 0)); // r0 += r6
    insns.push(Insn::new(0x71, 1, 0, 3, 0)); // r1 = *(u8 *)(r0 + 3)
    try_load(&insns).map_err(|e| format!("the kernel refused loads through an untyped bpf_rdonly_cast view: {e}"))
}

/// The event facts' views: `dst_entry.input`, `dst_entry.dev->mtu` and `skb_shared_info`'s
/// `gso_size`, `gso_segs`.
fn facts(btf: &KernelBtf, o: &Offsets, kfunc: u32) -> Result<(u32, u32), String> {
    let id = |name: &str| btf.struct_id(name).ok_or_else(|| format!("no struct {name} in BTF"));
    let (dst, shinfo) = (id("dst_entry")?, id("skb_shared_info")?);
    let off = |o: u32| i16::try_from(o).map_err(|_| "a facts offset is unknown or too large".to_string());
    let mut insns = cast(kfunc, dst);
    if o.dst_input != u32::MAX {
        insns.push(Insn::new(LDX_DW, 1, 0, off(o.dst_input)?, 0)); // r1 = *(u64 *)(r0 + input)
    }
    insns.push(Insn::new(LDX_DW, 0, 0, off(o.dst_dev)?, 0));
    insns.push(Insn::new(0x61, 1, 0, off(o.dev_mtu)?, 0)); // r1 = *(u32 *)(r0 + mtu)
    insns.extend(cast(kfunc, shinfo));
    insns.push(Insn::new(0x69, 1, 0, off(o.shinfo_gso_size)?, 0)); // u16 loads
    insns.push(Insn::new(0x69, 1, 0, off(o.shinfo_gso_size)? + 2, 0));
    try_load(&insns).map_err(|e| format!("the kernel refused loads through dst_entry or skb_shared_info views: {e}"))?;
    Ok((dst, shinfo))
}

/// `r0 = bpf_rdonly_cast(0, ty)`.
fn cast(kfunc: u32, ty: u32) -> Vec<Insn> {
    vec![Insn::new(MOV_K, 1, 0, 0, 0), Insn::new(MOV_K, 2, 0, 0, ty.cast_signed()), Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 0, kfunc.cast_signed())]
}

fn try_load(body: &[Insn]) -> Result<(), bpf::LoadError> {
    let mut insns = body.to_vec();
    insns.extend(Insn::returning(0));
    let spec = ProgSpec { prog_type: bpf::PROG_RAW_TRACEPOINT, ..ProgSpec::default() };
    bpf::load(&spec, "tracer_cast", &insns, 4096).map(drop)
}

/// The type placeholders (`r2 = magic` before a cast).
const MAGICS: [i32; 4] = [BYTES_TYPE_MAGIC, DST_TYPE_MAGIC, SHINFO_TYPE_MAGIC, VOID_TYPE_MAGIC];

/// Rewrites every placeholder pair in `elf`'s code sections; the number of calls patched.
pub fn patch(elf: &mut [u8], ids: Option<Ids>) -> Result<usize> {
    let mut calls = 0;
    super::each_code_section(elf, |code| {
        for insn in code.chunks_exact_mut(INSN) {
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let (op, regs) = (insn[0], insn[1]);
            let new = if op == CALL && regs == 0 && imm == RDONLY_CAST_MAGIC {
                calls += 1;
                match ids {
                    Some(ids) => Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 0, ids.kfunc.cast_signed()),
                    None => Insn::new(MOV_X, 0, 1, 0, 0),
                }
            } else if op == MOV_K && regs == 2 && MAGICS.contains(&imm) {
                // A type the kernel lacks stays 0: its loads are behind a config flag at 0
                // (and `void` is 0).
                let ty = ids.and_then(|i| match imm {
                    BYTES_TYPE_MAGIC => Some(i.view),
                    DST_TYPE_MAGIC => i.facts.map(|f| f.0),
                    SHINFO_TYPE_MAGIC => i.facts.map(|f| f.1),
                    _ => None,
                });
                Insn::new(MOV_K, 2, 0, 0, ty.unwrap_or(0).cast_signed())
            } else {
                continue;
            };
            insn.copy_from_slice(&crate::filter::inline::encode(new));
        }
        Ok(())
    })?;
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders(elf: &[u8]) -> (usize, usize) {
        let mut n = (0, 0);
        for w in elf.chunks_exact(INSN) {
            let imm = i32::from_le_bytes([w[4], w[5], w[6], w[7]]);
            n.0 += usize::from(w[0] == CALL && w[1] == 0 && imm == RDONLY_CAST_MAGIC);
            n.1 += usize::from(w[0] == MOV_K && w[1] == 2 && MAGICS.contains(&imm));
        }
        n
    }

    #[test]
    fn every_placeholder_is_rewritten() {
        let obj = crate::probes::loader::object();
        let (calls, types) = placeholders(obj);
        assert!(calls >= 6, "the drop probe's two variants each copy through a view and read two facts: {calls}");
        assert_eq!(calls, types);
        for ids in [Some(Ids { kfunc: 1234, view: 99, facts: Some((98, 97)), void: true }), Some(Ids { kfunc: 1234, view: 99, facts: None, void: false }), None] {
            let mut copy = obj.to_vec();
            assert_eq!(patch(&mut copy, ids).unwrap(), calls);
            assert_eq!(placeholders(&copy), (0, 0));
            let want = match ids {
                Some(i) => Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 0, i.kfunc.cast_signed()),
                None => Insn::new(MOV_X, 0, 1, 0, 0),
            };
            let n = copy.chunks_exact(INSN).filter(|w| **w == crate::filter::inline::encode(want)).count();
            assert!(n >= calls, "{n} of {calls}");
        }
    }
}
