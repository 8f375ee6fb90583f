//! Every command's options (clap `Args`), apart from the parser that composes them (`cli.rs`):
//! the commands and what they call take their options from here, and nothing here imports a
//! command, so no module imports the one above it. Flag names are a contract.
pub mod capture;
pub mod doctor;
pub mod merge;
pub mod report;
pub mod watch;

pub use capture::CaptureArgs;
pub use doctor::DoctorArgs;
pub use merge::MergeArgs;
pub use report::ReportArgs;
pub use watch::WatchArgs;

pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// libcni's cache directory (its `results/` holds one file per pod sandbox), for capture and
/// doctor alike.
pub const DEFAULT_CNI_CACHE_DIR: &str = crate::pods::DEFAULT_CACHE_DIR;
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

/// A node's name as every command records it: `--node-name`, else `$NODE_NAME` (the downward
/// API sets it in a pod), else the host name.
pub fn node_name(flag: Option<&str>) -> String {
    if let Some(n) = flag.filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}
