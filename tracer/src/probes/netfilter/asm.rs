//! The netfilter observer program, assembled here: aya (≤ 0.16) has no netfilter program type,
//! and the program is a dozen instructions. It records "this skb passed observer slot N" in the
//! per-CPU `NF_RING` and always returns `NF_ACCEPT`: it never changes a verdict.
use tracer_common::{EVENT_HEADER_LEN, NF_RING_LEN, NfRing, PacketEvent, counter, hook, kind};

use crate::kernel::bpf::Insn;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn::new(code, dst, src, off, imm)
}

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_DW: u8 = 0x79;
const LDX_W: u8 = 0x61;
const STX_DW: u8 = 0x7b;
const STX_W: u8 = 0x63;
const ST_W: u8 = 0x62;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const ADD64_X: u8 = 0x0f;
const AND64_K: u8 = 0x57;
const LSH64_K: u8 = 0x67;
const LD_IMM64: u8 = 0x18;
const JEQ_K: u8 = 0x15;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const PSEUDO_MAP_FD: u8 = 1;
const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const NF_ACCEPT: i32 = 1;

/// Maps the observer writes: `ring` always; `path` (track, events, counters) with `--path`.
#[derive(Clone, Copy, Debug)]
pub struct Maps {
    pub ring: i32,
    pub path: Option<PathMaps>,
}

#[derive(Clone, Copy, Debug)]
pub struct PathMaps {
    /// `PATH_TRACK`: skb address → packet id.
    pub track: i32,
    /// `EVENTS` ring buffer.
    pub events: i32,
    /// `COUNTERS` (per-CPU array).
    pub counters: i32,
    /// `PATH_LIVE`: 0 while nothing is followed (then no packet's lookup can hit).
    pub live: i32,
}

const ST_B: u8 = 0x72;
const ST_DW: u8 = 0x7a;
const HELPER_KTIME_GET_NS: i32 = 5;
const HELPER_RINGBUF_OUTPUT: i32 = 130;
const BPF_RB_NO_WAKEUP: i32 = 1;
/// Where the path record is built on the stack.
const REC: i16 = -128;

/// A forward jump to a label, patched once the label is placed.
struct Asm {
    code: Vec<Insn>,
    fixups: Vec<(usize, &'static str)>,
    labels: Vec<(&'static str, usize)>,
}

impl Asm {
    fn new() -> Self {
        Self { code: Vec::new(), fixups: Vec::new(), labels: Vec::new() }
    }

    fn push(&mut self, i: Insn) {
        self.code.push(i);
    }

    fn ld_map(&mut self, dst: u8, fd: i32) {
        self.push(insn(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd));
        self.push(insn(0, 0, 0, 0, 0));
    }

    /// `r0 = bpf_map_lookup_elem(map, r10 + key)` (the key already on the stack).
    fn lookup(&mut self, fd: i32, key: i16) {
        self.push(insn(MOV64_X, 2, 10, 0, 0));
        self.push(insn(ADD64_K, 2, 0, 0, i32::from(key)));
        self.ld_map(1, fd);
        self.push(insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM));
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, label: &'static str) {
        self.fixups.push((self.code.len(), label));
        self.push(insn(code, dst, 0, 0, imm));
    }

    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.code.len()));
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, name) in self.fixups {
            let target = self.labels.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).expect("label placed");
            self.code[at].off = i16::try_from(target - at - 1).expect("short jump");
        }
        self.code
    }
}

fn off<T: TryFrom<usize>>(v: usize) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(v).expect("small offset")
}

/// The observer for `slot`: `ctx_skb_off` is `offsetof(struct bpf_nf_ctx, skb)` from BTF.
/// With path maps it also reports a hop for packets `--path` follows.
pub fn observer(slot: u32, ctx_skb_off: i16, maps: Maps) -> Vec<Insn> {
    let skb_arr: i16 = off(core::mem::offset_of!(NfRing, skb));
    let slot_arr: i16 = off(core::mem::offset_of!(NfRing, slot));
    let mask = i32::try_from(NF_RING_LEN - 1).expect("small");
    let slot = i32::from_ne_bytes(slot.to_ne_bytes());
    let mut a = Asm::new();
    a.push(insn(LDX_DW, 6, 1, ctx_skb_off, 0)); // r6 = ctx->skb
    a.push(insn(ST_W, 10, 0, -4, 0)); // key = 0
    a.lookup(maps.ring, -4);
    a.jump(JEQ_K, 0, 0, if maps.path.is_some() { "path" } else { "accept" });
    a.push(insn(LDX_W, 1, 0, 0, 0)); // r1 = head
    a.push(insn(MOV64_X, 2, 1, 0, 0));
    a.push(insn(AND64_K, 2, 0, 0, mask)); // r2 = head & mask
    a.push(insn(ADD64_K, 1, 0, 0, 1));
    a.push(insn(STX_W, 0, 1, 0, 0)); // head += 1
    a.push(insn(MOV64_X, 3, 2, 0, 0));
    a.push(insn(LSH64_K, 3, 0, 0, 3));
    a.push(insn(ADD64_X, 3, 0, 0, 0));
    a.push(insn(STX_DW, 3, 6, skb_arr, 0)); // skb[i] = skb
    a.push(insn(LSH64_K, 2, 0, 0, 2));
    a.push(insn(ADD64_X, 2, 0, 0, 0));
    a.push(insn(ST_W, 2, 0, slot_arr, slot)); // slot[i] = slot
    if let Some(p) = maps.path {
        a.label("path");
        path_hop(&mut a, slot, p);
    }
    a.label("accept");
    a.push(insn(MOV64_K, 0, 0, 0, NF_ACCEPT));
    a.push(insn(EXIT, 0, 0, 0, 0));
    a.finish()
}

/// For a followed packet (r6 = skb): a `PacketEvent` of kind PATH, hook NETFILTER, the slot in
/// `nf_slot`, into the event ring; counted like the kernel programs' path events.
fn path_hop(a: &mut Asm, slot: i32, p: PathMaps) {
    let field = |o: usize| REC + off::<i16>(o);
    // No hash lookup while nothing is followed (an array lookup the verifier inlines).
    a.push(insn(ST_W, 10, 0, -4, 0));
    a.lookup(p.live, -4);
    a.jump(JEQ_K, 0, 0, "accept");
    a.push(insn(LDX_DW, 1, 0, 0, 0));
    a.jump(JEQ_K, 1, 0, "accept");
    a.push(insn(STX_DW, 10, 6, -16, 0)); // track key = skb
    a.lookup(p.track, -16);
    a.jump(JEQ_K, 0, 0, "accept");
    a.push(insn(LDX_DW, 7, 0, 0, 0)); // r7 = packet id
    for i in 0..EVENT_HEADER_LEN.div_ceil(8) {
        a.push(insn(ST_DW, 10, 0, REC + off::<i16>(i * 8), 0));
    }
    a.push(insn(CALL, 0, 0, 0, HELPER_KTIME_GET_NS));
    a.push(insn(STX_DW, 10, 0, field(core::mem::offset_of!(PacketEvent, ts_ns)), 0));
    a.push(insn(STX_DW, 10, 6, field(core::mem::offset_of!(PacketEvent, skb)), 0));
    a.push(insn(STX_DW, 10, 7, field(core::mem::offset_of!(PacketEvent, packet_id)), 0));
    a.push(insn(ST_W, 10, 0, field(core::mem::offset_of!(PacketEvent, hook)), off::<i32>(hook::NETFILTER as usize)));
    a.push(insn(ST_W, 10, 0, field(core::mem::offset_of!(PacketEvent, nf_slot)), slot));
    a.push(insn(ST_B, 10, 0, field(core::mem::offset_of!(PacketEvent, kind)), i32::from(kind::PATH)));
    a.ld_map(1, p.events);
    a.push(insn(MOV64_X, 2, 10, 0, 0));
    a.push(insn(ADD64_K, 2, 0, 0, i32::from(REC)));
    a.push(insn(MOV64_K, 3, 0, 0, off::<i32>(EVENT_HEADER_LEN)));
    a.push(insn(MOV64_K, 4, 0, 0, BPF_RB_NO_WAKEUP));
    a.push(insn(CALL, 0, 0, 0, HELPER_RINGBUF_OUTPUT));
    // COUNTERS[PATH_EMITTED or PATH_LOST] += 1
    a.push(insn(ST_W, 10, 0, -4, off::<i32>(counter::PATH_EMITTED as usize)));
    a.jump(JEQ_K, 0, 0, "count");
    a.push(insn(ST_W, 10, 0, -4, off::<i32>(counter::PATH_LOST as usize)));
    a.label("count");
    a.lookup(p.counters, -4);
    a.jump(JEQ_K, 0, 0, "accept");
    a.push(insn(LDX_DW, 1, 0, 0, 0));
    a.push(insn(ADD64_K, 1, 0, 0, 1));
    a.push(insn(STX_DW, 0, 1, 0, 0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_variant_jumps_stay_inside() {
        let p = observer(7, 8, Maps { ring: 3, path: Some(PathMaps { track: 4, events: 5, counters: 6, live: 7 }) });
        for (i, x) in p.iter().enumerate() {
            if x.code == JEQ_K {
                let t = i + 1 + usize::try_from(x.off).unwrap();
                assert!(t < p.len(), "jump at {i} leaves the program");
            }
        }
        assert!(p.iter().any(|i| i.code == CALL && i.imm == HELPER_RINGBUF_OUTPUT));
        assert!(p.iter().all(|i| i.code != ST_DW || i.off >= REC), "record stays in its stack area");
    }

    #[test]
    fn jump_lands_on_accept() {
        let p = observer(7, 8, Maps { ring: 3, path: None });
        let j = p.iter().position(|i| i.code == JEQ_K).unwrap();
        let target = j + 1 + usize::try_from(p[j].off).unwrap();
        assert_eq!(p[target], insn(MOV64_K, 0, 0, 0, NF_ACCEPT));
        assert_eq!(p.last().unwrap().code, EXIT);
        assert!(p.iter().any(|i| i.code == ST_W && i.imm == 7));
    }

    /// Every path through the program (all branch outcomes) reaches an `exit` with r0 set to
    /// `NF_ACCEPT` by a constant move: the observer cannot return a dropping verdict whatever
    /// the ring lookup gives. (tests/tests/robust/ checks the same on the loaded programs.)
    #[test]
    fn every_path_returns_accept() {
        for maps in [Maps { ring: 3, path: None }, Maps { ring: 3, path: Some(PathMaps { track: 4, events: 5, counters: 6, live: 7 }) }] {
            every_path_returns_accept_in(&observer(3, 8, maps));
        }
    }

    fn every_path_returns_accept_in(p: &[Insn]) {
        // (pc, r0 constant) still to walk; the program has no back edges, so paths end.
        let mut work = vec![(0usize, None::<i32>)];
        let mut exits = 0;
        while let Some((pc, r0)) = work.pop() {
            let i = p[pc];
            let dst = i.regs & 0xf;
            match i.code {
                EXIT => {
                    assert_eq!(r0, Some(NF_ACCEPT), "exit at {pc}");
                    exits += 1;
                }
                JEQ_K => {
                    let target = usize::try_from(i64::try_from(pc).unwrap() + 1 + i64::from(i.off)).unwrap();
                    assert!(target > pc, "no back edges");
                    work.push((pc + 1, r0));
                    work.push((target, r0));
                }
                CALL => work.push((pc + 1, None)),
                LD_IMM64 => work.push((pc + 2, if dst == 0 { None } else { r0 })),
                MOV64_K if dst == 0 => work.push((pc + 1, Some(i.imm))),
                // Anything else that writes r0 makes it unknown.
                LDX_DW | LDX_W | MOV64_X | ADD64_K | ADD64_X | AND64_K | LSH64_K if dst == 0 => work.push((pc + 1, None)),
                _ => work.push((pc + 1, r0)),
            }
        }
        assert!(exits >= 2, "at least the paths ring found / ring missing: {exits}");
    }
}
