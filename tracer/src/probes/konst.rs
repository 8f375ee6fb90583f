//! Writes the load-time constants (`tracer_common::konst`) into the object's code: every
//! `r = imm64` whose upper half names `Config` or `Offsets` gets the value of the field its
//! lower half gives (byte offset, size), so the programs read no map for them.
//!
//! A 32-bit field is widened by the compiler with `r <<= 32; r >>= 32` after the immediate
//! (it cannot know the upper half is 0): where the value has no upper half and nothing jumps
//! between them, those two become `goto +0`, which the verifier removes. Three machine
//! instructions a constant otherwise, and a probe's hot path reads dozens.
use std::collections::HashSet;

use anyhow::Result;
use tracer_common::{Config, Offsets, konst};

/// `BPF_LD | BPF_IMM | BPF_DW`: two instruction slots, the immediate's halves in each `imm`.
const LD_IMM64: u8 = 0x18;
const SLOT: usize = 8;
/// `r <<= imm`, `r >>= imm` (64-bit, immediate operand) and `goto +0`.
const LSH64_K: u8 = 0x67;
const RSH64_K: u8 = 0x77;
const JA_NOP: [u8; SLOT] = [0x05, 0, 0, 0, 0, 0, 0, 0];

/// Writes every placeholder in `elf`'s code sections; the number written.
pub fn patch(elf: &mut [u8], config: &Config, offsets: &Offsets) -> Result<usize> {
    let mut written = 0;
    super::each_code_section(elf, |code| {
        written += patch_code(code, config, offsets)?;
        Ok(())
    })?;
    Ok(written)
}

/// `patch` for one code section.
fn patch_code(code: &mut [u8], config: &Config, offsets: &Offsets) -> Result<usize> {
    let mut written = 0;
    let targets = jump_targets(code);
    let mut i = 0;
    while i + 2 * SLOT <= code.len() {
        let pair = &mut code[i..i + 2 * SLOT];
        // A plain 64-bit immediate (source register 0, not a map or function reference).
        if pair[0] != LD_IMM64 || pair[1] >> 4 != 0 {
            i += SLOT;
            continue;
        }
        let tag = u32::from_le_bytes([pair[12], pair[13], pair[14], pair[15]]);
        let id = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
        let value = match tag {
            konst::CONFIG => config_value(config, id),
            konst::OFFSETS => offsets_value(offsets, id),
            _ => {
                i += 2 * SLOT;
                continue;
            }
        };
        let value = value.ok_or_else(|| anyhow::anyhow!("the eBPF object reads an unknown load-time constant ({tag:#x}, {id:#x}): rebuild it with this tracer"))?;
        pair[4..8].copy_from_slice(&value.to_le_bytes()[..4]);
        pair[12..16].copy_from_slice(&value.to_le_bytes()[4..]);
        written += 1;
        if value >> 32 == 0 {
            drop_widening(code, i / SLOT, &targets);
        }
        i += 2 * SLOT;
    }
    Ok(written)
}

/// Turns the `r <<= 32; r >>= 32` right after the immediate at slot `at` (of the same
/// register, no jump landing on either) into `goto +0`s.
fn drop_widening(code: &mut [u8], at: usize, targets: &HashSet<usize>) {
    let reg = code[at * SLOT + 1] & 0x0f;
    let (lsh, rsh) = (at + 2, at + 3);
    let Some(two) = code.get((lsh * SLOT)..(rsh + 1) * SLOT) else { return };
    let shift = |insn: &[u8], op: u8| insn[0] == op && insn[1] == reg && insn[2..4] == [0, 0] && insn[4..8] == 32u32.to_le_bytes();
    if !shift(&two[..SLOT], LSH64_K) || !shift(&two[SLOT..], RSH64_K) || targets.contains(&lsh) || targets.contains(&rsh) {
        return;
    }
    code[lsh * SLOT..(rsh + 1) * SLOT].copy_from_slice(&[JA_NOP, JA_NOP].concat());
}

/// Slots some jump or call lands on (a 64-bit immediate's second slot is not an instruction).
fn jump_targets(code: &[u8]) -> HashSet<usize> {
    const JMP: u8 = 0x05;
    const JMP32: u8 = 0x06;
    let mut targets = HashSet::new();
    let mut i = 0;
    while (i + 1) * SLOT <= code.len() {
        let insn = &code[i * SLOT..(i + 1) * SLOT];
        let (class, op) = (insn[0] & 0x07, insn[0] & 0xf0);
        if insn[0] == LD_IMM64 {
            i += 2;
            continue;
        }
        if class == JMP || class == JMP32 {
            // exit has no target; a call's is a function (pc-relative in imm for bpf-to-bpf).
            let off = match op {
                0x90 => None,
                0x80 => (insn[1] >> 4 == 1).then(|| i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]))),
                0x00 if class == JMP32 => Some(i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]))),
                _ => Some(i64::from(i16::from_le_bytes([insn[2], insn[3]]))),
            };
            if let Some(t) = off.and_then(|o| usize::try_from(i64::try_from(i).ok()? + 1 + o).ok()) {
                targets.insert(t);
            }
        }
        i += 1;
    }
    targets
}

/// `fn $name(v: &$ty, id) -> Option<u64>`: the value of the field placeholder `id` (the
/// lower half of its immediate) names, None for no field (`tracer_common::config_fields!`).
macro_rules! values {
    ($name:ident, $ty:ident, $tag:ident, { $($field:ident: $t:ident),* $(,)? }) => {
        fn $name(v: &$ty, id: u32) -> Option<u64> {
            $(
                if u64::from(id) == konst::id(konst::$tag, std::mem::offset_of!($ty, $field), size_of::<$t>()) & 0xffff_ffff {
                    return Some(u64::from(v.$field));
                }
            )*
            None
        }
    };
}

tracer_common::config_fields!(values, config_value);
tracer_common::offsets_fields!(values, offsets_value);

#[cfg(test)]
mod tests {
    use super::*;

    /// The placeholders left in `elf` (upper halves that name a struct).
    fn left(elf: &[u8]) -> usize {
        elf.chunks_exact(SLOT)
            .zip(elf.chunks_exact(SLOT).skip(1))
            .filter(|(a, b)| a[0] == LD_IMM64 && [konst::CONFIG, konst::OFFSETS].contains(&u32::from_le_bytes([b[4], b[5], b[6], b[7]])))
            .count()
    }

    #[test]
    fn every_placeholder_gets_its_fields_value() {
        let obj = crate::probes::loader::object();
        let before = left(obj);
        assert!(before >= 10, "the probes read their config and offsets as placeholders: {before}");
        let config = Config { reason_consumed: 0x1234_5678, event_interval_ns: 0x0102_0304_0506_0708, ..Config::default() };
        let offsets = Offsets { skb_dev: 0x10, ..Offsets::default() };
        let mut copy = obj.to_vec();
        assert_eq!(patch(&mut copy, &config, &offsets).unwrap(), before);
        assert_eq!(left(&copy), 0);
        // The values are where the placeholders were: find one of each.
        let has = |v: u64| copy.chunks_exact(SLOT).zip(copy.chunks_exact(SLOT).skip(1)).any(|(a, b)| {
            a[0] == LD_IMM64 && u64::from(u32::from_le_bytes([a[4], a[5], a[6], a[7]])) | u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]])) << 32 == v
        });
        assert!(has(0x1234_5678) && has(0x0102_0304_0506_0708) && has(0x10));
        // Widened constants lost their widening (two `goto +0`s each): about 4 in 10 of them.
        let nops = |elf: &[u8]| elf.chunks_exact(SLOT).filter(|c| *c == JA_NOP).count();
        assert!(nops(&copy) >= nops(obj) + before / 2, "{} nops, {} before, {before} constants", nops(&copy), nops(obj));
    }

    #[test]
    fn a_field_is_read_whole_and_an_unknown_one_refused() {
        let c = Config { copy_len: 77, forward_input_v6: u64::MAX - 1, ..Config::default() };
        let id = |off: usize, size: usize| u32::try_from(konst::id(konst::CONFIG, off, size) & 0xffff_ffff).unwrap();
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, copy_len), 4)), Some(77));
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, forward_input_v6), 8)), Some(u64::MAX - 1));
        // Past the struct, half a field, a field's offset with another size.
        assert_eq!(config_value(&c, id(size_of::<Config>(), 4)), None);
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, forward_input_v6) + 4, 4)), None);
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, copy_len), 8)), None);
        let o = Offsets { dst_input: 9, ..Offsets::default() };
        assert_eq!(offsets_value(&o, u32::try_from(konst::id(konst::OFFSETS, std::mem::offset_of!(Offsets, dst_input), 4) & 0xffff_ffff).unwrap()), Some(9));
    }

    /// One instruction: opcode, registers (src << 4 | dst), offset, immediate.
    fn insn(code: u8, regs: u8, off: i16, imm: i32) -> [u8; SLOT] {
        let mut i = [code, regs, 0, 0, 0, 0, 0, 0];
        i[2..4].copy_from_slice(&off.to_le_bytes());
        i[4..8].copy_from_slice(&imm.to_le_bytes());
        i
    }

    /// `r{reg} = <placeholder of the field at offset, size>` (two slots).
    fn placeholder(reg: u8, offset: usize, size: usize) -> [[u8; SLOT]; 2] {
        let id = konst::id(konst::CONFIG, offset, size);
        let mut lo = insn(LD_IMM64, reg, 0, 0);
        lo[4..8].copy_from_slice(&u32::try_from(id & 0xffff_ffff).unwrap().to_le_bytes());
        let mut hi = [0; SLOT];
        hi[4..8].copy_from_slice(&konst::CONFIG.to_le_bytes());
        [lo, hi]
    }

    /// `code` patched: its slots, and how many placeholders were written.
    fn patched(code: &[[u8; SLOT]], config: &Config) -> (Vec<[u8; SLOT]>, usize) {
        let mut bytes = code.concat();
        let n = patch_code(&mut bytes, config, &Offsets::default()).unwrap();
        (bytes.chunks_exact(SLOT).map(|c| c.try_into().unwrap()).collect(), n)
    }

    #[test]
    fn a_32_bit_constant_loses_its_widening_unless_a_jump_lands_in_it() {
        let config = Config { copy_len: 77, forward_input_v6: 1 << 40, ..Config::default() };
        let (lsh, rsh, exit) = (insn(LSH64_K, 3, 0, 32), insn(RSH64_K, 3, 0, 32), insn(0x95, 0, 0, 0));
        let [lo, hi] = placeholder(3, std::mem::offset_of!(Config, copy_len), 4);
        let (out, n) = patched(&[lo, hi, lsh, rsh, exit], &config);
        assert_eq!(n, 1);
        assert_eq!(out[0][4..8], 77u32.to_le_bytes(), "the value is written");
        assert_eq!(out[2..4], [JA_NOP, JA_NOP], "the widening is gone");
        assert_eq!(out[4], exit);
        // A jump onto the second shift (from `if r1 == 0`): a path that skips the immediate
        // needs both shifts.
        let jump = insn(0x15, 1, 3, 0);
        let (out, _) = patched(&[jump, lo, hi, lsh, rsh, exit], &config);
        assert_eq!(out[3..5], [lsh, rsh], "a jump target stays");
        // The widening of another register, or of a value with an upper half, stays.
        let (out, _) = patched(&[lo, hi, insn(LSH64_K, 4, 0, 32), insn(RSH64_K, 4, 0, 32), exit], &config);
        assert_eq!(out[2..4], [insn(LSH64_K, 4, 0, 32), insn(RSH64_K, 4, 0, 32)]);
        let [lo, hi] = placeholder(3, std::mem::offset_of!(Config, forward_input_v6), 8);
        let (out, _) = patched(&[lo, hi, lsh, rsh, exit], &config);
        assert_eq!(out[2..4], [lsh, rsh], "1 << 40 needs them");
        // A value that fits: the same field at 0.
        let (out, _) = patched(&[lo, hi, lsh, rsh, exit], &Config::default());
        assert_eq!(out[2..4], [JA_NOP, JA_NOP]);
    }

    #[test]
    fn jump_targets_skip_immediates_and_follow_calls() {
        // 0: if r1 == 0 goto +2 (→ 3); 1–2: r2 = imm64; 3: call pc+1 (→ 5); 4: exit; 5: goto -2 (→ 4)
        let [lo, hi] = placeholder(2, 0, 4);
        let code = [insn(0x15, 1, 2, 0), lo, hi, insn(0x85, 0x10, 0, 1), insn(0x95, 0, 0, 0), insn(0x05, 0, -2, 0)].concat();
        let mut t: Vec<usize> = jump_targets(&code).into_iter().collect();
        t.sort_unstable();
        assert_eq!(t, [3, 4, 5]);
    }
}
