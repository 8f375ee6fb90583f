//! Kernel side of `tracer`: observers only. Every program here reads; none changes a packet,
//! a verdict or a ruleset.
#![no_std]
#![no_main]
// Inline assembly for the filter placeholder (compiled.rs); the eBPF build enables nightly
// features (RUSTC_BOOTSTRAP, see tracer/build.rs).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

mod capture;
mod cast;
mod compiled;
mod config;
mod emit;
mod filter;
mod funcs;
mod kfree_skb;
mod maps;
mod netfilter;
mod path;
mod skb;
mod tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program; a loop keeps the signature honest.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
