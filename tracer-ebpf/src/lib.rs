#![no_std]
// The kernel programs live in main.rs (a bin for bpfel-unknown-none); this empty lib lets
// `tracer` name the crate as a build-dependency so cargo rebuilds it when it changes.
