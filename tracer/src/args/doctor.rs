//! `tracer doctor` options (the bundle runs the doctor with their defaults).
use std::path::PathBuf;

use clap::Args;

use super::{DEFAULT_BPFFS, DEFAULT_CNI_CACHE_DIR, DEFAULT_NETNS_DIR};

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Check this network namespace instead of the current one: a path (/proc/PID/ns/net,
    /// /var/run/netns/NAME) or a name under /var/run/netns.
    #[arg(long, value_name = "PATH|NAME")]
    pub netns: Option<String>,

    /// The bpffs holding Cilium's pinned maps (Cilium's are under tc/globals/).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BPFFS)]
    pub bpffs: PathBuf,

    /// libcni's cache directory (the pods this node set up; its results/, or DIR itself).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CNI_CACHE_DIR)]
    pub cni_cache_dir: PathBuf,

    /// Where container runtimes keep pod network namespaces.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_NETNS_DIR)]
    pub netns_dir: PathBuf,

    /// This node's pod CIDR (repeatable); lets the ipcache check recognise local pod IPs
    /// beyond those in Cilium's endpoint map.
    #[arg(long = "pod-cidr", value_name = "CIDR")]
    pub pod_cidrs: Vec<String>,
}

/// The defaults of `tracer doctor` with no options (what the bundle runs).
impl Default for DoctorArgs {
    fn default() -> Self {
        Self {
            json: true,
            netns: None,
            bpffs: DEFAULT_BPFFS.into(),
            cni_cache_dir: DEFAULT_CNI_CACHE_DIR.into(),
            netns_dir: DEFAULT_NETNS_DIR.into(),
            pod_cidrs: Vec::new(),
        }
    }
}
