//! Any classic-BPF program (not only what libpcap emits) run by our interpreter over any packet
//! must end without a panic, an out-of-bounds access or an endless loop: the kernel side runs
//! the same `step` function. Its translation to eBPF must translate, stay within what the
//! kernel accepts (`ebpf_vm` refuses anything else) and give the interpreter's verdict.
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
    let verdict = tracer_common::cbpf::run(&insns, packet, wirelen);
    let code = tracer::filter::translate::translate(&insns, &insns).expect("translates");
    if packet.len() > tracer_common::MAX_CAPTURE {
        return;
    }
    let translated = tracer::filter::ebpf_vm::run(&code, packet, wirelen, tracer_common::linktype::ETHERNET).expect("the translation misbehaved");
    // A jump whose target wraps around 2^32 lands back in the program in the interpreter (u32
    // arithmetic) and out of it in the translation; libpcap never emits one.
    let wraps = insns.iter().enumerate().any(|(pc, i)| {
        let far = |k: u32| u32::try_from(pc + 1).ok().and_then(|p| p.checked_add(k)).is_none();
        i.code & 0x07 == 0x05 && if i.code & 0xf0 == 0 { far(i.k) } else { false }
    });
    if !wraps {
        assert_eq!(translated, verdict, "{insns:?}");
    }
});
