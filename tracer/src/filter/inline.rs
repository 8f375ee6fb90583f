//! Writes the compiled expression into the eBPF object before it is loaded: each probe that
//! filters has a block of instructions (tracer-ebpf/src/compiled.rs: a marker, `ja +0`s,
//! `r0 = 0`) that is overwritten in place with the translation, its exits turned into jumps to
//! the block's end, so every probe runs the filter as its own code with no call.
//! (fentry/freplace could swap a function after load, but some kernels refuse them.)
use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _, SectionKind};
use tracer_common::{FILTER_MARKER, FILTER_PLACEHOLDER_INSNS};

use crate::kernel::bpf::Insn;

const INSN: usize = size_of::<Insn>();
/// `ja +0`: the padding the verifier removes from privileged programs.
const NOP: Insn = Insn::new(0x05, 0, 0, 0, 0);
/// `r0 = 0` (`BPF_ALU64 | BPF_MOV | BPF_K`).
const MOV_R0_0: Insn = Insn::new(0xb7, 0, 0, 0, 0);
/// The block's first instruction, `r0 = FILTER_MARKER`.
const MARKER: Insn = Insn::new(0xb7, 0, 0, 0, FILTER_MARKER);
/// `BPF_JMP | BPF_JEQ | BPF_K`, `BPF_JMP | BPF_EXIT`.
const JEQ_K: u8 = 0x15;
const EXIT: u8 = 0x95;
/// Instructions of one block: the marker, the padding and `r0 = 0`.
const BLOCK: usize = FILTER_PLACEHOLDER_INSNS + 2;

/// An eBPF object, 8-byte aligned as the ELF parser needs it.
pub struct Object(Vec<u64>);

impl Object {
    /// A copy of `elf` to patch.
    pub fn copy(elf: &[u8]) -> Self {
        let mut obj = Self(vec![0u64; elf.len().div_ceil(8)]);
        obj.bytes_mut()[..elf.len()].copy_from_slice(elf);
        obj
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a u64 slice seen as its bytes (u8 has no alignment or validity needs).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * 8) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * 8) }
    }
}

/// A copy of `elf` with every filter block holding `code` (None: `r0 = 0`, for probes that
/// never reach it), padded in front to the block's size (padding in front keeps every
/// instruction reachable). Trailing bytes of the copy beyond `elf` (alignment) are never read:
/// the ELF says its size.
pub fn patch(elf: &[u8], code: Option<&[Insn]>) -> Result<Object> {
    let body = match code {
        Some(c) => inlined(c),
        None => vec![MOV_R0_0],
    };
    if body.len() > BLOCK {
        bail!("the compiled filter has {} instructions; the placeholder holds {BLOCK}", body.len());
    }
    let block: Vec<[u8; INSN]> = padding(BLOCK - body.len())?.iter().chain(&body).map(|i| encode(*i)).collect();
    let mut obj = Object::copy(elf);
    let starts = blocks(obj.bytes())?;
    if starts.is_empty() {
        bail!("the eBPF object has no filter placeholder");
    }
    for at in starts {
        for (i, insn) in block.iter().enumerate() {
            obj.bytes_mut()[at + i * INSN..at + (i + 1) * INSN].copy_from_slice(insn);
        }
    }
    Ok(obj)
}

/// `code` (the translation, which returns its verdict with `exit`) as a block's tail: every
/// exit becomes a jump to the instruction after it, where the probe's code goes on with the
/// verdict in r0.
pub fn inlined(code: &[Insn]) -> Vec<Insn> {
    let end = code.len();
    code.iter()
        .enumerate()
        .map(|(i, insn)| if insn.code == EXIT { Insn::new(0x05, 0, 0, i16::try_from(end - i - 1).unwrap_or(i16::MAX), 0) } else { *insn })
        .collect()
}

/// `n` instructions the code follows: `r0 = 0; if r0 == 0 goto code` over `ja +0`s. The
/// verifier knows the jump is taken and never walks the `ja +0`s; run through, they would
/// be walked once per state the filter is reached in (thousands of instructions, dozens of
/// states: 0.2 s of a capture's start-up). It then removes the dead ones and the jump.
fn padding(n: usize) -> Result<Vec<Insn>> {
    if n < 2 {
        return Ok(vec![NOP; n]);
    }
    let over = i16::try_from(n - 2).context("the filter placeholder is too large for one jump over its padding")?;
    let mut pad = vec![MOV_R0_0, Insn::new(JEQ_K, 0, 0, over, 0)];
    pad.resize(n, NOP);
    Ok(pad)
}

/// File offsets of every filter block in the object's code: a marker followed by the padding
/// and `r0 = 0`, exactly (a marker without them is an error: the object is not ours).
fn blocks(elf: &[u8]) -> Result<Vec<usize>> {
    let file = object::File::parse(elf).context("cannot parse the eBPF object")?;
    let (marker, nop, last) = (encode(MARKER), encode(NOP), encode(MOV_R0_0));
    let mut found = Vec::new();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let Some((offset, size)) = section.file_range() else { continue };
        let (offset, size) = (usize::try_from(offset)?, usize::try_from(size)?);
        let code = elf.get(offset..offset + size).context("a code section lies outside the eBPF object")?;
        let mut i = 0;
        while i + INSN <= code.len() {
            if code[i..i + INSN] != marker {
                i += INSN;
                continue;
            }
            let insns: Vec<&[u8]> = code.get(i..i + BLOCK * INSN).context("a filter placeholder runs past its section")?.chunks(INSN).collect();
            if insns[1..BLOCK - 1].iter().any(|c| *c != nop) || insns[BLOCK - 1] != last {
                bail!("a filter placeholder in the eBPF object is not the block the loader expects");
            }
            // Nothing in the block may be relocated (a map or call): it would point into the new code.
            let (lo, hi) = (u64::try_from(i)?, u64::try_from(i + BLOCK * INSN)?);
            if section.relocations().any(|(r, _)| (lo..hi).contains(&r)) {
                bail!("a filter placeholder has relocations");
            }
            found.push(offset + i);
            i += BLOCK * INSN;
        }
    }
    Ok(found)
}

pub(crate) fn encode(i: Insn) -> [u8; INSN] {
    let mut b = [0u8; INSN];
    b[0] = i.code;
    b[1] = i.regs;
    b[2..4].copy_from_slice(&i.off.to_le_bytes());
    b[4..8].copy_from_slice(&i.imm.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_jumps_straight_to_the_code() {
        let original = crate::probes::loader::object();
        let n_blocks = blocks(original).unwrap().len();
        // The drop probe's two variants at least, and the path hooks.
        assert!(n_blocks >= 2, "{n_blocks}");
        let code = Insn::returning(7);
        let obj = patch(original, Some(&code)).unwrap();
        assert!(blocks(obj.bytes()).unwrap().is_empty(), "a block left unpatched");
        let body = inlined(&code);
        // `r0 = 7; ja +0` (the exit, now a jump to the block's end).
        assert_eq!(body, vec![code[0], Insn::new(0x05, 0, 0, 0, 0)]);
        let at = blocks(original).unwrap()[0];
        let block: Vec<[u8; INSN]> = obj.bytes()[at..at + BLOCK * INSN].chunks(INSN).map(|c| c.try_into().unwrap()).collect();
        let n = BLOCK - body.len();
        assert_eq!(block[0], encode(MOV_R0_0));
        let jump = Insn::new(JEQ_K, 0, 0, i16::try_from(n - 2).unwrap(), 0);
        assert_eq!(block[1], encode(jump));
        // `off` counts from the next instruction: it lands on the code's first.
        assert_eq!(2 + usize::try_from(jump.off).unwrap(), n);
        assert!(block[2..n].iter().all(|i| *i == encode(NOP)));
        assert_eq!(&block[n..], &body.iter().map(|i| encode(*i)).collect::<Vec<_>>()[..]);
        assert_eq!(padding(1).unwrap(), vec![NOP]);
        assert!(padding(0).unwrap().is_empty());
    }

    #[test]
    fn exits_jump_to_the_block_end() {
        let code = [Insn::new(0xb7, 0, 0, 0, 1), Insn::new(EXIT, 0, 0, 0, 0), Insn::new(0xb7, 0, 0, 0, 0), Insn::new(EXIT, 0, 0, 0, 0)];
        let body = inlined(&code);
        assert_eq!(body[1], Insn::new(0x05, 0, 0, 2, 0));
        assert_eq!(body[3], Insn::new(0x05, 0, 0, 0, 0));
        assert_eq!((body[0], body[2]), (code[0], code[2]));
    }
}
