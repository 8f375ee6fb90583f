//! Turning the user's filters into what the kernel programs evaluate.
#[cfg(test)]
mod differential;
pub mod ebpf_vm;
pub mod expr;
pub mod iface;
pub mod inline;
pub mod translate;
