//! Enriching drop events with who dropped them. Attribution reads what the probes recorded
//! and the node's state; it never reaches back into the probes.
pub mod netfilter;
pub mod tc;
