//! `tracer capture` options. Flag names are a contract: scripts and the tests use them.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::DEFAULT_BPFFS;

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

    /// Record the kernel stack of each drop event (`stack` in the JSON, its first frames in
    /// the pcapng comment, the top stacks in the summary's `by_stack`): where in the kernel a
    /// `NOT_SPECIFIED` drop came from. Drops held back by --max-event-rate carry none.
    #[arg(help_heading = "Probes", long)]
    pub stack: bool,

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
