//! Any classic-BPF program (not only what libpcap emits) run by our interpreter over any packet
//! must end without a panic, an out-of-bounds access or an endless loop: the kernel side runs
//! the same `step` function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_common::CbpfInsn;

fuzz_target!(|data: &[u8]| {
    let [n, wire, rest @ ..] = data else { return };
    let n = (usize::from(*n) % 64).min(rest.len() / 8);
    let (prog, packet) = rest.split_at(n * 8);
    let insns: Vec<CbpfInsn> = prog
        .chunks_exact(8)
        .map(|c| CbpfInsn { code: u16::from_le_bytes([c[0], c[1]]), jt: c[2], jf: c[3], k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]) })
        .collect();
    let wirelen = u32::try_from(packet.len()).unwrap_or(0).saturating_add(u32::from(*wire));
    let _ = tracer_common::cbpf::run(&insns, packet, wirelen);
});
