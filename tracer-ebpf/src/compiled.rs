//! The user's expression compiled to eBPF, inlined where it is evaluated. `filter` is a block
//! of instructions, a marker then `ja +0`s, that the loader overwrites before the object is
//! loaded with the translation of libpcap's programs (tracer/src/filter/translate.rs), its
//! exits turned into jumps to the block's end: every probe that filters runs the expression as
//! its own straight-line code, without a call (a call and its return cost more than a simple
//! expression on CPUs with return-stack mitigations). The verifier drops the unused padding.
use tracer_common::{FILTER_MARKER, FILTER_PLACEHOLDER_INSNS};

/// The filter's verdict for the `caplen` bytes at `data` (this CPU's scratch data, followed by
/// the filter's memory words) of a packet of `wirelen` bytes starting at a header of
/// `linktype`: non-zero = match. The arguments go into r1–r4 as the translation expects them;
/// it may use every register but r10 and no stack.
#[inline(always)]
pub fn filter(data: *const u8, caplen: u32, wirelen: u32, linktype: u32) -> u32 {
    let verdict: u32;
    // SAFETY: as written, a register move, jumps to the next instruction and `r0 = 0`; the
    // loader replaces it all with code that reads only the scratch data and memory words (a
    // block with no expression to run stays `r0 = 0`: the probes do not reach it then).
    unsafe {
        core::arch::asm!(
            "r0 = {marker}",
            ".rept {n}",
            "goto +0",
            ".endr",
            "r0 = 0",
            marker = const FILTER_MARKER,
            n = const FILTER_PLACEHOLDER_INSNS,
            inlateout("r1") data => _,
            inlateout("r2") caplen => _,
            inlateout("r3") wirelen => _,
            inlateout("r4") linktype => _,
            lateout("r0") verdict,
            lateout("r5") _,
            lateout("r6") _,
            lateout("r7") _,
            lateout("r8") _,
            lateout("r9") _,
            options(nostack),
        );
    }
    verdict
}
