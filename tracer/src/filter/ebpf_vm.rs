//! A userspace runner for the eBPF the translator emits (translate.rs), for tests and fuzzing
//! without root: the instructions it uses, with the kernel's semantics. The kernel-side check
//! (the same code loaded and run by the real verifier and kernel) is in translate.rs's tests.
use tracer_common::{CAPTURE_SLACK, MAX_CAPTURE};

use crate::kernel::bpf::Insn;

/// Runs `code` as the filter placeholder would: `packet` truncated to the capture window,
/// `wirelen`, `linktype`. None when the code does something the translator never emits
/// (an unknown instruction, a load out of bounds, a backward jump, running off the end).
#[expect(clippy::cast_possible_truncation, reason = "eBPF's 32-bit operations take the low halves of registers")]
#[expect(clippy::many_single_char_names, reason = "registers and instruction fields, named as in the eBPF docs")]
pub fn run(code: &[Insn], packet: &[u8], wirelen: u32, linktype: u8) -> Option<u32> {
    // r1 is the data pointer: modelled as offset 0 into `data`, tagged by a high bit.
    const DATA: u64 = 1 << 62;
    const STACK: u64 = 1 << 61;
    // The packet window, then the 16 memory words (`FILTER_MEM_OFFSET`).
    let mut data = vec![0u8; MAX_CAPTURE + CAPTURE_SLACK + 64];
    let cap = packet.len().min(MAX_CAPTURE);
    data[..cap].copy_from_slice(&packet[..cap]);
    let mut stack = [0u8; 64];
    let mut r = [0u64; 11];
    r[1] = DATA;
    r[2] = u64::try_from(cap).ok()?;
    r[3] = u64::from(wirelen);
    r[4] = u64::from(linktype);
    r[10] = STACK + 64;
    let mut pc = 0usize;
    loop {
        let i = *code.get(pc)?;
        let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
        let k = i64::from(i.imm).cast_unsigned();
        pc += 1;
        let class = i.code & 0x07;
        match class {
            0x04 | 0x07 => {
                let alu32 = class == 0x04;
                let s = if i.code & 0x08 != 0 && i.code & 0xf0 != 0xd0 { *r.get(src)? } else { k };
                let d = *r.get(dst)?;
                let (d32, s32) = (d as u32, s as u32);
                let v = match (i.code & 0xf0, alu32) {
                    (0xd0, _) => match i.imm {
                        16 => u64::from((d as u16).swap_bytes()),
                        32 => u64::from(d32.swap_bytes()),
                        _ => return None,
                    },
                    (0x00, true) => u64::from(d32.wrapping_add(s32)),
                    (0x10, true) => u64::from(d32.wrapping_sub(s32)),
                    (0x20, true) => u64::from(d32.wrapping_mul(s32)),
                    (0x30, true) => u64::from(d32.checked_div(s32).unwrap_or(0)),
                    (0x40, true) => u64::from(d32 | s32),
                    (0x50, true) => u64::from(d32 & s32),
                    (0x60, true) if s32 < 32 => u64::from(d32 << s32),
                    (0x70, true) if s32 < 32 => u64::from(d32 >> s32),
                    (0x80, true) => u64::from(d32.wrapping_neg()),
                    (0x90, true) => u64::from(d32.checked_rem(s32).unwrap_or(d32)),
                    (0xa0, true) => u64::from(d32 ^ s32),
                    (0xb0, true) => u64::from(s32),
                    (0x00, false) => d.wrapping_add(s),
                    (0x50, false) => d & s,
                    (0xb0, false) => s,
                    _ => return None,
                };
                r[dst] = v;
            }
            0x05 | 0x06 => {
                let op = i.code & 0xf0;
                if op == 0x90 {
                    return Some(r[0] as u32);
                }
                let s = if i.code & 0x08 != 0 { *r.get(src)? } else { k };
                let d = *r.get(dst)?;
                let (d, s) = if class == 0x06 { (u64::from(d as u32), u64::from(s as u32)) } else { (d, s) };
                let taken = match op {
                    0x00 => true,
                    0x10 => d == s,
                    0x20 => d > s,
                    0x30 => d >= s,
                    0x40 => d & s != 0,
                    0x50 => d != s,
                    0xa0 => d < s,
                    0xb0 => d <= s,
                    _ => return None,
                };
                if taken {
                    // Forward only: i.off ≥ 0.
                    pc += usize::try_from(i.off).ok()?;
                }
            }
            0x01..=0x03 => {
                let width = match i.code & 0x18 {
                    0x00 => 4,
                    0x08 => 2,
                    0x10 => 1,
                    _ => return None,
                };
                let (base, value) = match class {
                    0x01 => (r[src], None),
                    0x02 => (r[dst], Some(k)),
                    _ => (r[dst], Some(r[src])),
                };
                let addr = base.wrapping_add(i64::from(i.off).cast_unsigned());
                let mem: &mut [u8] = if addr & DATA != 0 { &mut data } else if addr & STACK != 0 { &mut stack } else { return None };
                let at = usize::try_from(addr & !(DATA | STACK)).ok()?;
                let bytes = mem.get_mut(at..at.checked_add(width)?)?;
                match value {
                    None => r[dst] = bytes.iter().rev().fold(0u64, |a, b| (a << 8) | u64::from(*b)),
                    Some(v) => bytes.copy_from_slice(&v.to_le_bytes()[..width]),
                }
            }
            _ => return None,
        }
    }
}
