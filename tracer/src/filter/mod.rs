//! Turning the user's filters into what the kernel programs evaluate.
pub mod expr;
pub mod iface;
