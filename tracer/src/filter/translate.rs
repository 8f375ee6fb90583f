//! libpcap's classic-BPF programs translated to eBPF, for the kernel's filter placeholder
//! (tracer-ebpf/src/compiled.rs): the drop probe and the path hooks then evaluate the user's
//! expression as straight-line eBPF instead of stepping the `bpf_loop` interpreter.
//!
//! Semantics are those of `tracer_common::cbpf::step` (libpcap's `bpf_filter`): 32-bit A and X,
//! 16 zeroed memory words, big-endian packet loads that reject the packet when out of the
//! captured bytes, division by zero and shifts of 32 or more as the interpreter does them.
//!
//! The calling convention (the placeholder's arguments): r1 = packet bytes (map value,
//! `MAX_CAPTURE + CAPTURE_SLACK` long, then the 16 memory words at `FILTER_MEM_OFFSET`),
//! r2 = captured length (≤ `MAX_CAPTURE`), r3 = wire length, r4 = link type; the verdict is
//! returned in r0 (by `exit`, which the loader turns into a jump past the inlined block). The
//! code keeps A in r6, X in r7, uses r8/r9 as temporaries; it calls nothing and uses no stack
//! (it runs inside the probe's frame). Only forward jumps (classic BPF has no others), every
//! instruction reachable (the verifier rejects dead code), packet offsets bounded by constants
//! the verifier can check.
use anyhow::{Result, bail};
use tracer_common::{CbpfInsn, FILTER_MEM_OFFSET, MAX_CAPTURE, linktype};

use crate::kernel::bpf::Insn;

const A: u8 = 6;
const X: u8 = 7;
const T: u8 = 8;
const P: u8 = 9;
const DATA: u8 = 1;
const CAPLEN: u8 = 2;
const WIRELEN: u8 = 3;
const LINKTYPE: u8 = 4;
/// Memory word `i` lives at `r1 + FILTER_MEM_OFFSET + 4 i`.
#[expect(clippy::cast_possible_truncation, reason = "MAX_CAPTURE is 2048")]
const MAX: u32 = MAX_CAPTURE as u32;

// eBPF encoding (linux/bpf.h).
const ALU32: u8 = 0x04;
const ALU64: u8 = 0x07;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const LDX_MEM: u8 = 0x61; // | size
const STX_MEM_W: u8 = 0x63;
const ST_MEM_W: u8 = 0x62;
const SIZE_W: u8 = 0x00;
const SIZE_H: u8 = 0x08;
const SIZE_B: u8 = 0x10;
const SRC_X: u8 = 0x08;
const OP_ADD: u8 = 0x00;
const OP_LSH: u8 = 0x60;
const OP_AND: u8 = 0x50;
const OP_MOV: u8 = 0xb0;
const OP_END: u8 = 0xd0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JGE: u8 = 0x30;
const JSET: u8 = 0x40;
const JNE: u8 = 0x50;
const JLT: u8 = 0xa0;
const JLE: u8 = 0xb0;
const EXIT: u8 = 0x95;

/// A jump target, resolved when the code is laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    /// Classic instruction `n` of the program being translated.
    Pc(usize),
    /// Start of the raw-IP program.
    Raw,
    /// Return 0.
    Reject,
}

struct Emitter {
    code: Vec<Insn>,
    /// (instruction, program index, target)
    fixups: Vec<(usize, usize, Label)>,
    /// (program index, classic pc) → eBPF index; `Raw`/`Reject` positions.
    pcs: Vec<Vec<Option<usize>>>,
    raw: Option<usize>,
    reject: Option<usize>,
    prog: usize,
}

impl Emitter {
    fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        self.code.push(Insn::new(code, dst, src, off, imm));
    }

    fn alu32_k(&mut self, op: u8, dst: u8, k: u32) {
        self.op(ALU32 | op, dst, 0, 0, i32::from_ne_bytes(k.to_ne_bytes()));
    }

    fn alu32_x(&mut self, op: u8, dst: u8, src: u8) {
        self.op(ALU32 | op | SRC_X, dst, src, 0, 0);
    }

    fn jump(&mut self, code: u8, dst: u8, src: u8, imm: i32, to: Label) {
        self.fixups.push((self.code.len(), self.prog, to));
        self.op(code, dst, src, 0, imm);
    }

    fn goto(&mut self, to: Label) {
        self.jump(JMP | JA, 0, 0, 0, to);
    }

    /// `A`/`X` = big-endian `width` bytes at constant `k` (known to end within `MAX`).
    fn load_abs(&mut self, dst: u8, k: u32, width: u32) {
        self.jump(JMP | JLT, CAPLEN, 0, imm(k + width), Label::Reject);
        self.load_at(dst, DATA, i16::try_from(k).unwrap_or(0), width);
    }

    fn load_at(&mut self, dst: u8, base: u8, off: i16, width: u32) {
        let size = match width {
            4 => SIZE_W,
            2 => SIZE_H,
            _ => SIZE_B,
        };
        self.op(LDX_MEM | size, dst, base, off, 0);
        if width > 1 {
            // to_be on a little-endian machine: swap (and zero-extend) the low `width` bytes.
            self.op(ALU32 | OP_END | SRC_X, dst, 0, 0, imm(width * 8));
        }
    }

    fn mem(k: u32) -> i16 {
        FILTER_MEM_OFFSET + 4 * i16::try_from(k & 15).unwrap_or(0)
    }
}

fn imm(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

/// Translates the Ethernet and raw-IP programs into one eBPF function (see the module doc).
/// An empty program rejects every packet of its link type.
pub fn translate(ethernet: &[CbpfInsn], raw_ip: &[CbpfInsn]) -> Result<Vec<Insn>> {
    let progs = [normalize(ethernet), normalize(raw_ip)];
    let reach: Vec<Vec<bool>> = progs.iter().map(|p| reachable(p)).collect();
    let mut e = Emitter { code: Vec::new(), fixups: Vec::new(), pcs: progs.iter().map(|p| vec![None; p.len()]).collect(), raw: None, reject: None, prog: 0 };
    // The caller's u32 arguments, zero-extended whatever the compiler left in the high halves.
    for r in [CAPLEN, WIRELEN, LINKTYPE] {
        e.alu32_x(OP_MOV, r, r);
    }
    e.alu32_k(OP_MOV, A, 0);
    e.alu32_k(OP_MOV, X, 0);
    let words: u32 = progs.iter().flatten().filter(|i| reads_mem(**i)).fold(0, |m, i| m | (1 << (i.k & 15)));
    for k in (0..16).filter(|k| words & (1 << k) != 0) {
        e.op(ST_MEM_W, DATA, 0, Emitter::mem(k), 0);
    }
    e.jump(JMP | JNE, LINKTYPE, 0, i32::from(linktype::ETHERNET), Label::Raw);
    for (n, prog) in progs.iter().enumerate() {
        e.prog = n;
        if n == 1 {
            e.raw = Some(e.code.len());
        }
        if prog.is_empty() {
            e.goto(Label::Reject);
            continue;
        }
        for (pc, insn) in prog.iter().enumerate() {
            if reach[n][pc] {
                e.pcs[n][pc] = Some(e.code.len());
                one(&mut e, prog.len(), pc, *insn)?;
            }
        }
    }
    if e.fixups.iter().any(|(_, _, l)| *l == Label::Reject) {
        e.reject = Some(e.code.len());
        e.alu32_k(OP_MOV, 0, 0);
        e.op(EXIT, 0, 0, 0, 0);
    }
    for (at, prog, label) in std::mem::take(&mut e.fixups) {
        let target = match label {
            Label::Pc(pc) => e.pcs[prog].get(pc).copied().flatten(),
            Label::Raw => e.raw,
            Label::Reject => e.reject,
        };
        let Some(target) = target else { bail!("internal: unresolved jump to {label:?}") };
        let Ok(off) = i16::try_from(target.wrapping_sub(at + 1)) else { bail!("jump too long") };
        if target <= at {
            bail!("internal: backward jump");
        }
        e.code[at].off = off;
    }
    Ok(e.code)
}

/// Where execution goes after instruction `pc` (`Reject` past the end).
fn target(len: usize, pc: usize, skip: u32) -> Label {
    match usize::try_from(skip).ok().and_then(|s| (pc + 1).checked_add(s)) {
        Some(t) if t < len => Label::Pc(t),
        _ => Label::Reject,
    }
}

/// Emits instruction `pc` of a program of `len` instructions (already normalized).
#[expect(clippy::many_single_char_names, reason = "classic BPF's own names: k, jt/jf targets t and f")]
fn one(e: &mut Emitter, len: usize, pc: usize, i: CbpfInsn) -> Result<()> {
    let (code, k) = (i.code, i.k);
    let class = code & 0x07;
    // Falling through is only for the next classic instruction: past the end is a jump to
    // `Reject` (the code that follows may be the other link type's program).
    let next = target(len, pc, 0);
    match class {
        0x00 | 0x01 => {
            let dst = if class == 0x00 { A } else { X };
            match (class, code & 0xe0) {
                (_, 0x00) => e.alu32_k(OP_MOV, dst, k),
                (0x00, 0x20) => e.load_abs(A, k, width(code)),
                (0x00, 0x40) => load_ind(e, k, width(code)),
                (_, 0x60) => e.op(LDX_MEM | SIZE_W, dst, DATA, Emitter::mem(k), 0),
                (_, 0x80) => e.alu32_x(OP_MOV, dst, WIRELEN),
                (0x01, 0xa0) => {
                    e.load_abs(X, k, 1);
                    e.alu32_k(OP_AND, X, 0x0f);
                    e.alu32_k(OP_LSH, X, 2);
                }
                _ => bail!("internal: unnormalized load {code:#x}"),
            }
        }
        0x02 | 0x03 => {
            let src = if class == 0x02 { A } else { X };
            e.op(STX_MEM_W, DATA, src, Emitter::mem(k), 0);
        }
        0x04 => alu(e, code, k),
        0x05 => {
            let op = u8::try_from(code & 0xf0).unwrap_or(0);
            let x = u8::from(code & 0x08 != 0) << 3;
            if op == 0x00 {
                e.goto(target(len, pc, k));
                return Ok(());
            }
            let (t, f) = (target(len, pc, u32::from(i.jt)), target(len, pc, u32::from(i.jf)));
            let (src, k) = if code & 0x08 != 0 { (X, 0) } else { (0, imm(k)) };
            let jcode = |op: u8| JMP32 | op | x;
            if t == f {
                e.goto(t);
            } else if t == next && matches!(next, Label::Pc(_)) && op != JSET {
                // Fall through on true: jump on the opposite condition.
                let inv = match op {
                    JEQ => JNE,
                    JGT => JLE,
                    _ => JLT, // JGE
                };
                e.jump(jcode(inv), A, src, k, f);
            } else {
                e.jump(jcode(op), A, src, k, t);
                if f != next || next == Label::Reject {
                    e.goto(f);
                }
            }
            return Ok(());
        }
        0x06 => {
            match code & 0x18 {
                0x00 => e.alu32_k(OP_MOV, 0, k),
                0x08 => e.alu32_x(OP_MOV, 0, X),
                _ => e.alu32_x(OP_MOV, 0, A),
            }
            e.op(EXIT, 0, 0, 0, 0);
            return Ok(());
        }
        _ => {
            if code & 0xf8 == 0 {
                e.alu32_x(OP_MOV, X, A);
            } else {
                e.alu32_x(OP_MOV, A, X);
            }
        }
    }
    if next == Label::Reject {
        e.goto(Label::Reject);
    }
    Ok(())
}

fn width(code: u16) -> u32 {
    tracer_common::cbpf::load_width(code & 0x18).unwrap_or(1)
}

/// `A` = `width` bytes at X + k (32-bit wrap-around, as classic BPF computes it).
fn load_ind(e: &mut Emitter, k: u32, width: u32) {
    e.alu32_x(OP_MOV, T, X);
    e.alu32_k(OP_ADD, T, k);
    e.op(ALU64 | OP_MOV | SRC_X, P, T, 0, 0);
    e.op(ALU64 | OP_ADD, P, 0, 0, imm(width));
    e.jump(JMP | JGT | SRC_X, P, CAPLEN, 0, Label::Reject);
    // A no-op at run time (T + width ≤ caplen ≤ MAX): the bound the verifier needs.
    e.op(ALU64 | OP_AND, T, 0, 0, imm(MAX - 1));
    e.op(ALU64 | OP_MOV | SRC_X, P, DATA, 0, 0);
    e.op(ALU64 | OP_ADD | SRC_X, P, T, 0, 0);
    e.load_at(A, P, 0, width);
}

fn alu(e: &mut Emitter, code: u16, k: u32) {
    let op = u8::try_from(code & 0xf0).unwrap_or(0);
    let by_x = code & 0x08 != 0;
    match op {
        // Shifts of 32 or more give 0 (the interpreter's rule; eBPF leaves them undefined).
        0x60 | 0x70 if by_x => {
            e.op(JMP | JGE, X, 0, 2, 32); // to the `A = 0` below
            e.alu32_x(op, A, X);
            e.op(JMP | JA, 0, 0, 1, 0);
            e.alu32_k(OP_MOV, A, 0);
        }
        0x60 | 0x70 if k >= 32 => e.alu32_k(OP_MOV, A, 0),
        // Division by a zero X rejects (K = 0 was normalized away).
        0x30 | 0x90 if by_x => {
            e.jump(JMP | JEQ, X, 0, 0, Label::Reject);
            e.alu32_x(op, A, X);
        }
        0x80 => e.op(ALU32 | 0x80, A, 0, 0, 0),
        _ if by_x => e.alu32_x(op, A, X),
        _ => e.alu32_k(op, A, k),
    }
}

/// True when the programs read or write a memory word (their translation then needs the
/// words beside the packet bytes, in scratch: it cannot read the packet in place).
pub fn uses_memory(progs: &[&[CbpfInsn]]) -> bool {
    progs.iter().copied().flatten().any(|i| reads_mem(*i) || matches!(i.code & 0x07, 0x02 | 0x03))
}

/// True when `i` reads a memory word.
fn reads_mem(i: CbpfInsn) -> bool {
    matches!(i.code & 0x07, 0x00 | 0x01) && i.code & 0xe0 == 0x60
}

/// The program with every instruction that always rejects the packet (or that the
/// interpreter refuses) replaced by `ret #0`, so the translation has no such special cases:
/// loads past the capture window, division by a constant 0, unknown opcodes.
fn normalize(prog: &[CbpfInsn]) -> Vec<CbpfInsn> {
    const REJECT: CbpfInsn = CbpfInsn { code: 0x06, jt: 0, jf: 0, k: 0 };
    prog.iter()
        .map(|i| {
            let (code, k) = (i.code, i.k);
            let ok = match (code & 0x07, code & 0xe0) {
                (0x00, 0x20) => tracer_common::cbpf::load_width(code & 0x18).is_some_and(|w| u64::from(k) + u64::from(w) <= u64::from(MAX)),
                (0x00, 0x40) => tracer_common::cbpf::load_width(code & 0x18).is_some(),
                (0x00 | 0x01, 0x00 | 0x60 | 0x80) => true,
                (0x01, 0xa0) => k < MAX,
                (0x00 | 0x01, _) => false,
                (0x04, _) => match code & 0xf0 {
                    0x30 | 0x90 => code & 0x08 != 0 || k != 0,
                    op => op <= 0xa0,
                },
                (0x05, _) => code & 0xf0 <= 0x40,
                _ => true,
            };
            if ok { *i } else { REJECT }
        })
        .collect()
}

/// Instructions some execution reaches from the first (classic BPF jumps only forward).
fn reachable(prog: &[CbpfInsn]) -> Vec<bool> {
    let len = prog.len();
    let mut seen = vec![false; len];
    if len == 0 {
        return seen;
    }
    seen[0] = true;
    for pc in 0..len {
        if !seen[pc] {
            continue;
        }
        let i = prog[pc];
        let succ: Vec<Label> = match i.code & 0x07 {
            0x06 => vec![],
            0x05 if i.code & 0xf0 == 0 => vec![target(len, pc, i.k)],
            0x05 => vec![target(len, pc, u32::from(i.jt)), target(len, pc, u32::from(i.jf))],
            _ => vec![target(len, pc, 0)],
        };
        for s in succ {
            if let Label::Pc(t) = s {
                seen[t] = true;
            }
        }
    }
    seen
}
