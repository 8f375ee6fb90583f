//! What the running kernel tells us: struct layouts (BTF), drop-reason names, symbols and which
//! program types it accepts.
pub mod bpf;
pub mod btf;
pub mod features;
pub mod kallsyms;
pub mod nfnl;
pub mod reasons;
pub mod rtnl;
pub mod tracefs;
