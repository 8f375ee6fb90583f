//! Packet bytes read without a helper call: `bpf_rdonly_cast(addr, btf_id)` (Linux ≥ 6.2) gives
//! a read-only typed view of any kernel address, the verifier turns the call into a register
//! move, and a load through the view is one instruction whose fault the JIT catches (the load
//! reads 0). `bpf_probe_read_kernel` costs a call and a return per read, which on CPUs with
//! return-stack mitigations is most of a flood's per-drop cost.
//!
//! Rust has no kfunc calls, so the code calls a made-up helper number with a made-up type
//! number in r2; the loader (tracer/src/probes/casts.rs) rewrites both before the object is
//! loaded: into the kfunc call and the BTF id of a struct whose first member is an integer
//! array of at least `DIRECT_MAX` bytes (the view's type: each load must lie within one
//! member), or, on a kernel that refuses them, into `r0 = r1` with `Config::direct_bytes` 0,
//! and the helper path runs instead.
use tracer_common::cast::{BYTES_TYPE_MAGIC, DIRECT_MAX, DST_TYPE_MAGIC, RDONLY_CAST_MAGIC, SHINFO_TYPE_MAGIC, VOID_TYPE_MAGIC};

/// `addr` as a `struct dst_entry` (a drop event's route).
#[inline(always)]
pub fn dst_entry(addr: u64) -> u64 {
    view::<DST_TYPE_MAGIC>(addr)
}

/// `addr` as a `struct skb_shared_info` (a drop event's GSO facts).
#[inline(always)]
pub fn shared_info(addr: u64) -> u64 {
    view::<SHINFO_TYPE_MAGIC>(addr)
}

/// The packet bytes at `addr` as untyped read-only memory (`Config::filter_direct`): the
/// compiled filter loads from it at the offsets it computes, with no copy first.
#[inline(always)]
pub fn packet(addr: u64) -> *const u8 {
    view::<VOID_TYPE_MAGIC>(addr) as *const u8
}

/// A read-only view of `addr` typed by the loader as `TYPE` says (patched at load, see above).
#[inline(always)]
fn view<const TYPE: i32>(addr: u64) -> u64 {
    let view: u64;
    // SAFETY: a register move once patched; it reads and writes no memory.
    unsafe {
        core::arch::asm!(
            "r2 = {ty}",
            "call {kfunc}",
            ty = const TYPE,
            kfunc = const RDONLY_CAST_MAGIC,
            inlateout("r1") addr => _,
            lateout("r0") view,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack),
        );
    }
    view
}

/// Copies `n` (1 ≤ n ≤ `DIRECT_MAX`) bytes at `start` to `dst`, 8 at a time through the view:
/// one load, one store and one compare per word, at constant offsets (the verifier checks each
/// against the view's type, and drops the words past a bound it knows, such as a filter's
/// window). In assembly: the compiler kept every word's offsets and bound in
/// spilled registers, four times the instructions (a fifth of a flood's per-drop time). The
/// last word may copy up to 7 bytes past `n` (the caller counts `n`).
#[inline(always)]
pub fn copy(dst: *mut u8, start: u64, n: u32) {
    let view = view::<BYTES_TYPE_MAGIC>(start);
    // Word `i` at `8 * i`, then a jump past the remaining words (3 instructions each, the
    // last 2) when `n` ends within it.
    macro_rules! word {
        ($off:literal, $end:literal, $skip:literal) => {
            concat!("{t} = *(u64 *)({v} + ", $off, ")\n*(u64 *)({d} + ", $off, ") = {t}\nif {n} <= ", $end, " goto +", $skip, "\n")
        };
    }
    // SAFETY: the view's loads fault to 0 on a bad address; `dst` has `DIRECT_MAX` bytes (the
    // scratch data, 8-aligned) and `n` ≤ `DIRECT_MAX`.
    unsafe {
        core::arch::asm!(
            word!(0, 8, 92),
            word!(8, 16, 89),
            word!(16, 24, 86),
            word!(24, 32, 83),
            word!(32, 40, 80),
            word!(40, 48, 77),
            word!(48, 56, 74),
            word!(56, 64, 71),
            word!(64, 72, 68),
            word!(72, 80, 65),
            word!(80, 88, 62),
            word!(88, 96, 59),
            word!(96, 104, 56),
            word!(104, 112, 53),
            word!(112, 120, 50),
            word!(120, 128, 47),
            word!(128, 136, 44),
            word!(136, 144, 41),
            word!(144, 152, 38),
            word!(152, 160, 35),
            word!(160, 168, 32),
            word!(168, 176, 29),
            word!(176, 184, 26),
            word!(184, 192, 23),
            word!(192, 200, 20),
            word!(200, 208, 17),
            word!(208, 216, 14),
            word!(216, 224, 11),
            word!(224, 232, 8),
            word!(232, 240, 5),
            word!(240, 248, 2),
            "{t} = *(u64 *)({v} + 248)",
            "*(u64 *)({d} + 248) = {t}",
            v = in(reg) view,
            d = in(reg) dst,
            n = in(reg) u64::from(n),
            t = out(reg) _,
            options(nostack),
        );
    }
    const _: () = assert!(DIRECT_MAX == 32 * 8);
}
