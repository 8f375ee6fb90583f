//! The records of a capture, from the kernel's wire record to what every sink writes. Depends
//! on nothing above it (no probes, enrichment or sinks); every text form is in render.rs.
pub mod cilium;
pub mod conntrack;
pub mod drop;
pub mod headers;
pub mod hooks;
pub mod netfilter;
pub mod path;
pub mod render;
pub mod skb;
pub mod tc;
pub mod time;
pub mod wire;
