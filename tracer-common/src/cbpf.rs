//! Classic BPF (libpcap's filter programs) interpreter core, shared by the kernel program
//! (which keeps the state in a per-CPU map and steps it from `bpf_loop`) and userspace (which
//! checks it against libpcap in tests and fuzzing). One step, no loops, no panics.
use crate::CbpfInsn;

/// Interpreter state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Vm {
    pub a: u32,
    pub x: u32,
    pub pc: u32,
    /// Instructions in the program.
    pub len: u32,
    /// Index of the program's first instruction in the instruction array.
    pub base: u32,
    /// Captured bytes (loads beyond them fail).
    pub caplen: u32,
    /// Packet length (`len` loads).
    pub wirelen: u32,
    /// Return value once stopped: 0 = reject.
    pub ret: u32,
    pub mem: [u32; 16],
}

/// What a step decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Stopped; the verdict is in `Vm::ret`.
    Stop,
}

// Classic BPF encoding (linux/filter.h, linux/bpf_common.h).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const SRC_X: u16 = 0x08;

/// Bytes a load of `size` reads.
#[expect(clippy::inline_always, reason = "the eBPF verifier needs it inlined into the bpf_loop callback")]
#[inline(always)]
pub fn load_width(size: u16) -> Option<u32> {
    match size {
        W => Some(4),
        H => Some(2),
        B => Some(1),
        _ => None,
    }
}

/// Executes `insn` (the one at `vm.pc`). `load(off, width)` returns the big-endian value of
/// `width` packet bytes at `off`, or None when they are not all captured.
#[expect(clippy::inline_always, reason = "the eBPF verifier needs it inlined into the bpf_loop callback")]
#[inline(always)]
pub fn step(vm: &mut Vm, insn: &CbpfInsn, load: impl Fn(u32, u32) -> Option<u32>) -> Step {
    let (code, k) = (insn.code, insn.k);
    vm.pc = vm.pc.wrapping_add(1);
    let reject = |vm: &mut Vm| {
        vm.ret = 0;
        Step::Stop
    };
    match code & 0x07 {
        LD => {
            let v = match code & 0xe0 {
                IMM => Some(k),
                ABS => load_width(code & 0x18).and_then(|w| load(k, w)),
                IND => load_width(code & 0x18).and_then(|w| load(vm.x.wrapping_add(k), w)),
                MEM => Some(vm.mem[(k & 15) as usize]),
                LEN => Some(vm.wirelen),
                _ => None,
            };
            match v {
                Some(v) => vm.a = v,
                None => return reject(vm),
            }
        }
        LDX => {
            let v = match code & 0xe0 {
                IMM => Some(k),
                MEM => Some(vm.mem[(k & 15) as usize]),
                LEN => Some(vm.wirelen),
                MSH => load(k, 1).map(|b| (b & 0x0f) << 2),
                _ => None,
            };
            match v {
                Some(v) => vm.x = v,
                None => return reject(vm),
            }
        }
        ST => vm.mem[(k & 15) as usize] = vm.a,
        STX => vm.mem[(k & 15) as usize] = vm.x,
        ALU => {
            let src = if code & SRC_X != 0 { vm.x } else { k };
            vm.a = match code & 0xf0 {
                0x00 => vm.a.wrapping_add(src),
                0x10 => vm.a.wrapping_sub(src),
                0x20 => vm.a.wrapping_mul(src),
                0x30 if src != 0 => vm.a / src,
                0x40 => vm.a | src,
                0x50 => vm.a & src,
                // Shifts by ≥ 32 give 0, as in the kernel's and libpcap's interpreters.
                0x60 => vm.a.checked_shl(src).unwrap_or(0),
                0x70 => vm.a.checked_shr(src).unwrap_or(0),
                0x80 => vm.a.wrapping_neg(),
                0x90 if src != 0 => vm.a % src,
                0xa0 => vm.a ^ src,
                _ => return reject(vm),
            };
        }
        JMP => {
            let src = if code & SRC_X != 0 { vm.x } else { k };
            let off = match code & 0xf0 {
                0x00 => k,
                op => {
                    let taken = match op {
                        0x10 => vm.a == src,
                        0x20 => vm.a > src,
                        0x30 => vm.a >= src,
                        0x40 => vm.a & src != 0,
                        _ => return reject(vm),
                    };
                    u32::from(if taken { insn.jt } else { insn.jf })
                }
            };
            vm.pc = vm.pc.wrapping_add(off);
        }
        RET => {
            vm.ret = match code & 0x18 {
                0x00 => k,
                0x08 => vm.x,
                _ => vm.a,
            };
            return Step::Stop;
        }
        _ => {
            // MISC: TAX (0x00) or TXA (0x80).
            if code & 0xf8 == 0 {
                vm.x = vm.a;
            } else {
                vm.a = vm.x;
            }
        }
    }
    if vm.pc >= vm.len {
        // Ran off the end (libpcap never emits this; the kernel rejects such programs).
        return reject(vm);
    }
    Step::Continue
}

/// Big-endian read of `width` bytes at `off` from `pkt` (userspace loads).
pub fn load_slice(pkt: &[u8], off: u32, width: u32) -> Option<u32> {
    let start = off as usize;
    let end = start.checked_add(width as usize)?;
    let bytes = pkt.get(start..end)?;
    Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// Runs a whole program over `pkt` (userspace: tests and fuzzing). Returns `ret`.
pub fn run(insns: &[CbpfInsn], pkt: &[u8], wirelen: u32) -> u32 {
    let mut vm = Vm {
        len: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        caplen: u32::try_from(pkt.len()).unwrap_or(u32::MAX),
        wirelen,
        ..Vm::default()
    };
    // Classic BPF jumps only forward, so `len` steps always suffice.
    for _ in 0..insns.len() {
        let Some(insn) = insns.get(vm.pc as usize) else { return 0 };
        if step(&mut vm, insn, |off, w| load_slice(pkt, off, w)) == Step::Stop {
            return vm.ret;
        }
    }
    0
}
