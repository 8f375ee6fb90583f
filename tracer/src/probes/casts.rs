//! The typed views of packet bytes (tracer-ebpf/src/cast.rs): the object calls a made-up
//! helper with a made-up type number for each; before the object is loaded they become the
//! `bpf_rdonly_cast` kfunc call and the BTF id of the view's struct, on a kernel that takes
//! that call (found by loading one), or a register move, with `Config::direct_bytes` 0 so the
//! programs copy bytes with `bpf_probe_read_kernel` as before.
use anyhow::{Result, bail};
use object::{Object as _, ObjectSection as _, SectionKind};
use tracer_common::cast::{BYTES_TYPE_MAGIC, DIRECT_MAX, RDONLY_CAST_MAGIC};

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
/// `insn.src_reg` of a kfunc call.
const PSEUDO_KFUNC_CALL: u8 = 2;

/// BTF ids of the kfunc and of the view's struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub kfunc: u32,
    pub view: u32,
}

/// The ids, when this kernel has both and loads a program that calls the kfunc with them;
/// the reason why not otherwise (for the debug log).
pub fn probe(btf: &KernelBtf) -> Result<Ids, String> {
    let kfunc = btf.func_id("bpf_rdonly_cast").ok_or("no bpf_rdonly_cast kfunc (Linux < 6.2)")?;
    let view = btf.byte_view_struct(DIRECT_MAX).ok_or("no struct of byte arrays for the view")?;
    let ids = Ids { kfunc, view };
    // Loads through the view at every word the programs load (`r1 = *(u64 *)(r0 + off)`).
    let mut insns = vec![Insn::new(MOV_K, 1, 0, 0, 0), Insn::new(MOV_K, 2, 0, 0, view.cast_signed()), Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 0, kfunc.cast_signed())];
    insns.extend((0..DIRECT_MAX).step_by(8).map(|off| Insn::new(0x79, 1, 0, i16::try_from(off).unwrap_or(0), 0)));
    insns.extend(Insn::returning(0));
    let spec = ProgSpec { prog_type: bpf::PROG_RAW_TRACEPOINT, ..ProgSpec::default() };
    bpf::load(&spec, "tracer_cast", &insns, 4096).map(drop).map_err(|e| format!("the kernel refused a bpf_rdonly_cast call: {e}"))?;
    Ok(ids)
}

/// Rewrites every placeholder pair in `elf`'s code sections; the number of calls patched.
pub fn patch(elf: &mut [u8], ids: Option<Ids>) -> Result<usize> {
    let ranges: Vec<(usize, usize)> = {
        let file = object::File::parse(&*elf)?;
        file.sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| s.file_range())
            .map(|(at, len)| Ok((usize::try_from(at)?, usize::try_from(len)?)))
            .collect::<Result<_>>()?
    };
    let mut calls = 0;
    for (at, len) in ranges {
        let Some(code) = elf.get_mut(at..at + len) else { bail!("a code section of the eBPF object lies outside it") };
        for insn in code.chunks_exact_mut(INSN) {
            let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            let (op, regs) = (insn[0], insn[1]);
            let new = if op == CALL && regs == 0 && imm == RDONLY_CAST_MAGIC {
                calls += 1;
                match ids {
                    Some(ids) => Insn::new(CALL, 0, PSEUDO_KFUNC_CALL, 0, ids.kfunc.cast_signed()),
                    None => Insn::new(MOV_X, 0, 1, 0, 0),
                }
            } else if op == MOV_K && regs == 2 && imm == BYTES_TYPE_MAGIC {
                Insn::new(MOV_K, 2, 0, 0, ids.map_or(0, |i| i.view.cast_signed()))
            } else {
                continue;
            };
            insn.copy_from_slice(&crate::filter::inline::encode(new));
        }
    }
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
            n.1 += usize::from(w[0] == MOV_K && w[1] == 2 && imm == BYTES_TYPE_MAGIC);
        }
        n
    }

    #[test]
    fn every_placeholder_is_rewritten() {
        let obj = crate::probes::loader::object();
        let (calls, types) = placeholders(obj);
        assert!(calls >= 2, "the drop probe's two variants each copy through a view: {calls}");
        assert_eq!(calls, types);
        for ids in [Some(Ids { kfunc: 1234, view: 99 }), None] {
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
