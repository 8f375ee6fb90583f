//! Writes the compiled expression into the eBPF object before it is loaded: the kernel side
//! has a placeholder function (tracer-ebpf/src/compiled.rs), a fixed block of `ja +0`, whose
//! instructions are overwritten in place, so every probe that calls it runs the filter as its
//! own code. (fentry/freplace could swap a function after load, but some kernels refuse them.)
use anyhow::{Context as _, Result, bail};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use crate::kernel::bpf::Insn;

/// Part of the placeholder's (mangled) symbol name.
const PLACEHOLDER: &str = "tracer_filter_placeholder";
const INSN: usize = size_of::<Insn>();
/// `ja +0`: the padding the verifier removes from privileged programs.
const NOP: Insn = Insn::new(0x05, 0, 0, 0, 0);
/// `r0 = 0` (`BPF_ALU64 | BPF_MOV | BPF_K`).
const MOV_R0_0: Insn = Insn::new(0xb7, 0, 0, 0, 0);
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ_K: u8 = 0x15;

/// An eBPF object, 8-byte aligned as the ELF parser needs it.
pub struct Object(Vec<u64>);

impl Object {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: a u64 slice seen as its bytes (u8 has no alignment or validity needs).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * 8) }
    }

    /// A copy of `elf` to patch.
    pub fn copy(elf: &[u8]) -> Self {
        let mut obj = Self(vec![0u64; elf.len().div_ceil(8)]);
        obj.bytes_mut()[..elf.len()].copy_from_slice(elf);
        obj
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * 8) }
    }
}

/// A copy of `elf` with the placeholder's body replaced by `code`, padded in front to the
/// placeholder's size (padding in front keeps every instruction reachable).
pub fn patch(elf: &[u8], code: &[Insn]) -> Result<Object> {
    let (start, len) = placeholder(elf)?;
    let slots = len / INSN;
    if code.len() > slots {
        bail!("the compiled filter has {} instructions; the placeholder holds {slots}", code.len());
    }
    let mut obj = Object::copy(elf);
    let body = &mut obj.bytes_mut()[start..start + slots * INSN];
    for (i, insn) in padding(slots - code.len())?.iter().chain(code).enumerate() {
        body[i * INSN..(i + 1) * INSN].copy_from_slice(&encode(*insn));
    }
    // Trailing bytes of the copy beyond `elf` (alignment) are never read: the ELF says its size.
    Ok(obj)
}

/// `n` instructions the code follows: `r0 = 0; if r0 == 0 goto code` over `ja +0`s. The
/// verifier knows the jump is taken and never walks the `ja +0`s; run through, they would
/// be walked once per state the filter is called in (thousands of instructions, dozens of
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

/// File offset and byte length of the placeholder function's code.
fn placeholder(elf: &[u8]) -> Result<(usize, usize)> {
    let file = object::File::parse(elf).context("cannot parse the eBPF object")?;
    let mut found = file.symbols().filter(|s| s.name().is_ok_and(|n| n.contains(PLACEHOLDER)) && s.size() > 0);
    let Some(sym) = found.next() else { bail!("the eBPF object has no filter placeholder") };
    if found.next().is_some() {
        bail!("the eBPF object has more than one filter placeholder");
    }
    let section = sym.section_index().context("the filter placeholder has no section")?;
    let section = file.section_by_index(section)?;
    let (offset, size) = section.file_range().context("the filter placeholder's section has no data")?;
    let (at, len) = (sym.address(), sym.size());
    if at + len > size || len % INSN as u64 != 0 {
        bail!("the filter placeholder lies outside its section");
    }
    // The placeholder must hold no relocated instruction (map or call): they would point into
    // the new code.
    if section.relocations().any(|(r, _)| (at..at + len).contains(&r)) {
        bail!("the filter placeholder has relocations");
    }
    Ok((usize::try_from(offset + at)?, usize::try_from(len)?))
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
    fn the_padding_jumps_straight_to_the_code() {
        let code = Insn::returning(7);
        let obj = patch(crate::probes::loader::object(), &code).unwrap();
        let (start, len) = placeholder(obj.bytes()).unwrap();
        let body: Vec<[u8; INSN]> = obj.bytes()[start..start + len].chunks(INSN).map(|c| c.try_into().unwrap()).collect();
        let n = body.len() - code.len();
        assert_eq!(body[0], encode(MOV_R0_0));
        let jump = Insn::new(JEQ_K, 0, 0, i16::try_from(n - 2).unwrap(), 0);
        assert_eq!(body[1], encode(jump));
        // `off` counts from the next instruction: it lands on the code's first.
        assert_eq!(2 + usize::try_from(jump.off).unwrap(), n);
        assert!(body[2..n].iter().all(|i| *i == encode(NOP)));
        assert_eq!(&body[n..], &code.map(encode)[..]);
        assert_eq!(padding(1).unwrap(), vec![NOP]);
        assert!(padding(0).unwrap().is_empty());
    }
}
