//! The netfilter observer program, assembled here: aya (≤ 0.16) has no netfilter program type,
//! and the program is a dozen instructions. It records "this skb passed observer slot N" in the
//! per-CPU `NF_RING` and always returns `NF_ACCEPT`: it never changes a verdict.
use tracer_common::{NF_RING_LEN, NfRing};

use crate::kernel::bpfsys::Insn;

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

/// The observer for `slot`: `ctx_skb_off` is `offsetof(struct bpf_nf_ctx, skb)` from BTF,
/// `ring_fd` the `NF_RING` map.
pub fn observer(slot: u32, ctx_skb_off: i16, ring_fd: i32) -> Vec<Insn> {
    let skb_arr = i16::try_from(core::mem::offset_of!(NfRing, skb)).expect("small offset");
    let slot_arr = i16::try_from(core::mem::offset_of!(NfRing, slot)).expect("small offset");
    let mask = i32::try_from(NF_RING_LEN - 1).expect("small");
    let slot = i32::from_ne_bytes(slot.to_ne_bytes());
    let body = [
        insn(LDX_DW, 6, 1, ctx_skb_off, 0), // r6 = ctx->skb
        insn(ST_W, 10, 0, -4, 0),           // key = 0
        insn(MOV64_X, 2, 10, 0, 0),
        insn(ADD64_K, 2, 0, 0, -4),        // r2 = &key
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, ring_fd),
        insn(0, 0, 0, 0, 0),               // second half of ld_imm64
        insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM),
        insn(JEQ_K, 0, 0, 12, 0),          // no ring: skip to accept
        insn(LDX_W, 1, 0, 0, 0),           // r1 = head
        insn(MOV64_X, 2, 1, 0, 0),
        insn(AND64_K, 2, 0, 0, mask),      // r2 = head & mask
        insn(ADD64_K, 1, 0, 0, 1),
        insn(STX_W, 0, 1, 0, 0),           // head += 1
        insn(MOV64_X, 3, 2, 0, 0),
        insn(LSH64_K, 3, 0, 0, 3),
        insn(ADD64_X, 3, 0, 0, 0),
        insn(STX_DW, 3, 6, skb_arr, 0),    // skb[i] = skb
        insn(LSH64_K, 2, 0, 0, 2),
        insn(ADD64_X, 2, 0, 0, 0),
        insn(ST_W, 2, 0, slot_arr, slot),  // slot[i] = slot
        insn(MOV64_K, 0, 0, 0, NF_ACCEPT),
        insn(EXIT, 0, 0, 0, 0),
    ];
    body.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_lands_on_accept() {
        let p = observer(7, 8, 3);
        let j = p.iter().position(|i| i.code == JEQ_K).unwrap();
        let target = j + 1 + usize::try_from(p[j].off).unwrap();
        assert_eq!(p[target], insn(MOV64_K, 0, 0, 0, NF_ACCEPT));
        assert_eq!(p.last().unwrap().code, EXIT);
        assert!(p.iter().any(|i| i.code == ST_W && i.imm == 7));
    }
}
