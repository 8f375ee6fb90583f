//! Command line (clap). Flag and field names are a contract: scripts and the tests use them.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Where do a Kubernetes pod's packets die on this node? Drop capture with reasons, locations, pcapng and JSON.",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture dropped packets on this node (needs root).
    #[command(
        after_help = "EXPRESSION is a tcpdump/pcap-filter expression (see pcap-filter(7)), e.g.\n  tracer capture --duration 30s --pcap drops.pcapng --json drops.jsonl 'udp and dst port 53'\n  tracer capture --iface 'lxc*' host 10.0.1.23\nIt is evaluated in the kernel, so the totals are exact for the packets that match it."
    )]
    Capture(CaptureArgs),
    /// Leave it running: exact drop metrics over HTTP, the last minutes of drops kept in memory,
    /// and a bundle dumped when a trigger fires (needs root).
    #[command(after_help = crate::watch::args::AFTER_HELP)]
    Watch(crate::watch::args::WatchArgs),
    /// Check this node for state that breaks pod networking (read-only).
    #[command(
        after_help = "Checks the kernel (BTF, drop reasons, usable BPF hooks), iptables (Cilium's and kube-proxy's\nchains still hooked, FORWARD, legacy vs nft), Cilium's pinned maps (stale endpoints, ipcache)\nand the host (forwarding, rp_filter, conntrack, neighbours, leftover lxc/netns).\nExit status: 0 healthy, 1 findings, 2 could not check."
    )]
    Doctor(DoctorArgs),
    /// Write one self-contained HTML page (and Markdown) from captures and bundles.
    #[command(
        after_help = "INPUT is a capture directory (drops.jsonl and/or summary.json, as --json/--summary wrote them),\na bundle directory (capture --bundle DIR) or its DIR.tar.zst. Several INPUTs: one report over\nseveral nodes. Works offline; the page holds no URL of any kind."
    )]
    Report(ReportArgs),
    /// Merge captures, bundles and watch dumps of several nodes: one summary, pcapng and JSON
    /// Lines, cross-node flows and clock offsets.
    #[command(
        after_help = "INPUT is a capture directory (drops.jsonl/summary.json/drops.pcapng, as --json/--summary/--pcap wrote them),\na bundle directory (capture --bundle DIR), its DIR.tar.zst, or a `tracer watch` dump (.tar.zst), one per node.\nDIR gets summary.json (per-node and total rows, cross-node flows, clock offsets), drops.pcapng\n(interfaces named node/ifname) and drops.jsonl (a `node` on every record); the table goes to stdout.\nThe node's name is the one the input recorded (--node-name), else the input's directory name."
    )]
    Merge(MergeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// Capture directories, bundle directories, bundle archives or watch dumps (.tar.zst).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,

    /// The directory to write (new or empty).
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Capture directories, bundle directories or bundle archives (.tar.zst).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,

    /// The HTML page to write.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,

    /// Also write the page's text sections as Markdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// The page's title [default: Packet drops on NODE…].
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}

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

pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// libcni's cache directory (its `results/` holds one file per pod sandbox), for capture and
/// doctor alike.
pub const DEFAULT_CNI_CACHE_DIR: &str = crate::pods::DEFAULT_CACHE_DIR;
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

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

#[derive(Args, Debug, Clone)]
#[expect(clippy::struct_excessive_bools, reason = "command-line switches")]
pub struct CaptureArgs {
    /// Stop after this long (e.g. 30s, 5m); otherwise run until Ctrl-C or SIGTERM.
    #[arg(short = 'd', long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Only drops on this interface; a name or a glob with `?` and a trailing `*` (e.g. lxc*).
    /// Repeatable.
    #[arg(help_heading = "Filters", short = 'i', long = "iface", value_name = "NAME|GLOB")]
    pub ifaces: Vec<String>,

    /// Only drops in this network namespace: a path (/proc/PID/ns/net, /var/run/netns/NAME),
    /// a name under /var/run/netns, or an inode number.
    #[arg(help_heading = "Filters", long, value_name = "PATH|INODE")]
    pub netns: Option<String>,

    /// Bytes of each dropped packet to keep, from the MAC header (or the IP header where the
    /// drop point has no MAC header).
    #[arg(help_heading = "Outputs", short = 's', long, default_value_t = 256, value_name = "N")]
    pub snaplen: u32,

    /// Write the dropped packets to this pcapng file (readable by tshark/Wireshark).
    #[arg(help_heading = "Outputs", short = 'w', long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// Write one JSON object per drop to FILE (JSON Lines), or to stdout with `-`.
    #[arg(help_heading = "Outputs", long, value_name = "FILE|-")]
    pub json: Option<PathBuf>,

    /// Write the run's exact totals as one JSON object to FILE.
    #[arg(help_heading = "Outputs", long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Keep an incident bundle in DIR (new or empty): node state at start and end (iptables,
    /// nft, ip, conntrack, sysctls, `tracer doctor`), the probes used, versions, this capture's
    /// pcapng/JSON/summary (written there unless given elsewhere), MANIFEST.json, and DIR.tar.zst.
    #[arg(help_heading = "Outputs", long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,

    /// Create FILE once every probe is attached (for scripts and tests).
    #[arg(help_heading = "Outputs", hide_short_help = true, long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,

    /// Keep FILE up to date with the counts so far (`drops`, `read`, `lost`, `rate_limited`,
    /// `written`), replaced atomically when they change: lets tests and scripts wait for the
    /// tracer to have seen what they sent instead of sleeping.
    #[arg(long, value_name = "FILE", hide = true)]
    pub progress_file: Option<PathBuf>,

    /// Do not attach netfilter observers: `NETFILTER_DROP` events then carry no table, chain
    /// or rule.
    #[arg(help_heading = "Probes", long)]
    pub no_netfilter: bool,

    /// Do not attach tc observers: `TC_INGRESS`/`TC_EGRESS` drops then name the program only when
    /// it is alone on its hook.
    #[arg(help_heading = "Probes", long)]
    pub no_tc: bool,

    /// The bpffs where Cilium pins its maps (read under DIR/tc/globals): drops by Cilium's
    /// programs (`cil_*`) then carry Cilium's own reason, source line, endpoint, identities and
    /// policy entry. Read-only; nothing is done when no Cilium map is pinned there.
    #[arg(help_heading = "Kubernetes", long, value_name = "DIR", default_value = DEFAULT_BPFFS)]
    pub cilium_bpffs: PathBuf,

    /// Only drops of this pod (NAMESPACE/NAME): in its network namespace, on its host-side
    /// interface (lxc…), or to/from its IPs. Repeatable. Pods are read from the CNI cache.
    #[arg(help_heading = "Kubernetes", long = "pod", value_name = "NAMESPACE/NAME")]
    pub pods: Vec<String>,

    /// libcni's cache directory, whose results/ name every pod sandbox on this node
    /// [default: /var/lib/cni].
    #[arg(help_heading = "Kubernetes", long, value_name = "DIR")]
    pub cni_cache_dir: Option<std::path::PathBuf>,

    /// Follow matching packets hook by hook: `"type": "path"` events per hook and a
    /// `"type": "packet"` record per packet (ordered path and fate), and a timeline on stdout.
    #[arg(help_heading = "Path", long)]
    pub path: bool,

    /// With --path: write every matching packet to the pcapng (once, with its path in the
    /// comment), not only the dropped ones.
    #[arg(help_heading = "Path", long, requires = "path")]
    pub all: bool,

    /// How --path follows packets: `tracepoint` (network tracepoints, every kernel), `fentry`
    /// or `kprobe` (adds kernel skb functions where the kernel allows them), or `auto`.
    #[arg(help_heading = "Path", long, value_enum, default_value = "auto", requires = "path")]
    pub backend: crate::probes::path::BackendChoice,

    /// At most N drop events per second per CPU (0: no limit). Past it, drops are still
    /// counted exactly (summary, tables) but their events are skipped and counted in
    /// `rate_limited`: a flood of drops cannot slow the node down or fill the disk.
    #[arg(help_heading = "Probes", long, default_value_t = 20_000, value_name = "N")]
    pub max_event_rate: u64,

    /// Do not print a line per drop on stdout.
    #[arg(help_heading = "Outputs", short, long)]
    pub quiet: bool,

    /// This node's name in every output (summary, JSON Lines, pcapng, bundle), for `tracer
    /// merge` [default: `$NODE_NAME`, else the host name].
    #[arg(help_heading = "Outputs", long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// tcpdump/pcap-filter expression selecting the packets to report.
    #[arg(help_heading = "Filters", value_name = "EXPRESSION", trailing_var_arg = true)]
    pub expression: Vec<String>,
}
