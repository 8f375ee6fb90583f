//! The user's expression compiled to eBPF. `tracer_filter_placeholder` is a fixed-size block of
//! `ja +0` instructions that the loader overwrites, before the object is loaded, with the
//! translation of libpcap's programs (tracer/src/filter/translate.rs): the filter then runs as
//! straight eBPF in every probe that calls it, instead of in the `bpf_loop` interpreter. The
//! verifier drops the unused `ja +0` padding of privileged programs.
use tracer_common::FILTER_PLACEHOLDER_INSNS;

/// The filter's verdict for the `caplen` bytes at `data` (this CPU's scratch data) of a packet
/// of `wirelen` bytes starting at a header of `linktype`: non-zero = match. Never inlined: its
/// body is replaced, so it must stay one function with nothing of the caller's folded into it.
/// The arguments go into r1–r4 as the translation expects them.
#[inline(never)]
pub fn tracer_filter_placeholder(data: *const u8, caplen: u32, wirelen: u32, linktype: u32) -> u32 {
    let verdict: u32;
    // SAFETY: jumps to the next instruction and a register move; the loader replaces it all
    // (a placeholder never runs as is: the probes call it only when the config says it was
    // replaced).
    unsafe {
        core::arch::asm!(
            ".rept {n}",
            "goto +0",
            ".endr",
            "r0 = 0",
            n = const FILTER_PLACEHOLDER_INSNS,
            in("r1") data,
            in("r2") caplen,
            in("r3") wirelen,
            in("r4") linktype,
            lateout("r0") verdict,
            options(nostack),
        );
    }
    verdict
}
