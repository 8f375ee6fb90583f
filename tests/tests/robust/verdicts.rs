//! The exit values of an eBPF program, as the kernel runs it (constant propagation over its
//! translated instructions): which verdicts it can return.

use std::collections::BTreeSet;

use integration_tests::{TempDir, cmd};

/// One eBPF instruction.
#[derive(Debug, Clone, Copy)]
pub struct Insn {
    pub code: u8,
    pub dst: usize,
    pub src: usize,
    pub off: i16,
    pub imm: i32,
}

pub fn decode(raw: &[u8]) -> Vec<Insn> {
    raw.chunks_exact(8)
        .map(|c| Insn { code: c[0], dst: usize::from(c[1] & 0xf), src: usize::from(c[1] >> 4), off: i16::from_le_bytes([c[2], c[3]]), imm: i32::from_le_bytes([c[4], c[5], c[6], c[7]]) })
        .collect()
}

/// The target of a jump at `pc` by `off`.
pub fn jump(pc: usize, off: i64) -> usize {
    usize::try_from(i64::try_from(pc).unwrap() + 1 + off).unwrap()
}

/// Every value r0 may hold at an `exit` of the main program (not of subprograms or callbacks):
/// constant propagation over the control-flow graph from instruction 0. `None` = not a constant
/// (then the verdict is unknown and the audit fails).
pub fn exit_values(insns: &[Insn]) -> BTreeSet<Option<i32>> {
    type Regs = [Option<i64>; 11];
    let mut state: Vec<Option<Regs>> = vec![None; insns.len() + 1];
    let mut work = vec![(0usize, [None; 11])];
    let mut exits = BTreeSet::new();
    let mut steps = 0;
    while let Some((pc, regs)) = work.pop() {
        steps += 1;
        assert!(steps < 1_000_000, "analysis does not converge");
        let Some(i) = insns.get(pc) else { continue };
        // Join with what was seen here: equal constants stay, others become unknown.
        let merged: Regs = match state[pc] {
            Some(old) => {
                let mut m = old;
                for r in 0..11 {
                    if m[r] != regs[r] {
                        m[r] = None;
                    }
                }
                if m == old {
                    continue;
                }
                m
            }
            None => regs,
        };
        state[pc] = Some(merged);
        let mut r = merged;
        let class = i.code & 7;
        let next = |n: usize, work: &mut Vec<(usize, Regs)>, r: Regs| work.push((n, r));
        match class {
            0 => {
                // ld_imm64 (two slots) or a legacy packet load into r0.
                if i.code == 0x18 {
                    let hi = insns.get(pc + 1).map_or(0, |n| i64::from(n.imm));
                    r[i.dst] = (i.src == 0).then_some((hi << 32) | i64::from(i.imm.cast_unsigned()));
                    next(pc + 2, &mut work, r);
                } else {
                    r[0] = None;
                    next(pc + 1, &mut work, r);
                }
            }
            1 => {
                r[i.dst] = None;
                next(pc + 1, &mut work, r);
            }
            2 | 3 => {
                // Stores; atomics with fetch write a register back.
                if i.code & 0xe0 == 0xc0 {
                    r[i.src] = None;
                    r[0] = None;
                }
                next(pc + 1, &mut work, r);
            }
            4 | 7 => {
                let op = i.code & 0xf0;
                let k = i.code & 0x08 == 0;
                r[i.dst] = if op == 0xb0 {
                    let v = if k { Some(i64::from(i.imm)) } else { r[i.src] };
                    if class == 4 { v.map(|v| v & 0xffff_ffff) } else { v }
                } else {
                    None
                };
                next(pc + 1, &mut work, r);
            }
            _ => {
                let op = i.code & 0xf0;
                match op {
                    0x00 => {
                        let off = if class == 6 { i64::from(i.imm) } else { i64::from(i.off) };
                        next(jump(pc, off), &mut work, r);
                    }
                    0x80 => {
                        for reg in r.iter_mut().take(6) {
                            *reg = None;
                        }
                        next(pc + 1, &mut work, r);
                    }
                    0x90 => {
                        // The kernel reads the verdict as a 32-bit int.
                        exits.insert(r[0].map(|v| i32::from_ne_bytes(v.to_ne_bytes()[..4].try_into().unwrap())));
                    }
                    _ => {
                        next(pc + 1, &mut work, r);
                        next(jump(pc, i64::from(i.off)), &mut work, r);
                    }
                }
            }
        }
    }
    exits
}

/// The program's translated instructions, as the kernel runs them (`bpftool prog dump xlated`).
pub fn xlated(id: u64, dir: &TempDir) -> Vec<Insn> {
    let f = dir.join(&format!("prog-{id}.bin"));
    cmd::run("bpftool", &["prog", "dump", "xlated", "id", &id.to_string(), "file", &f.display().to_string()]).unwrap();
    decode(&std::fs::read(&f).unwrap())
}
