//! `tracer watch` options. Flag names are a contract (issue 13): scripts, alerts and the tests
//! use them.
use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::args::CaptureArgs;

/// Where `/metrics` listens unless told otherwise: this node only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";
pub const DEFAULT_DUMP_DIR: &str = "/var/lib/tracer/dumps";

pub const AFTER_HELP: &str = concat!(
    "Runs until SIGTERM/SIGINT (exit 0, nothing left attached). SIGUSR1 or\n",
    "`curl -X POST http://127.0.0.1:9477/dump` dumps the flight recorder now.\n",
    "\n",
    "Triggers (--trigger, repeatable):  [NAME:] CONDITION... at [>=]RATE/s [for DURATION]\n",
    "  CONDITION: REASON (e.g. NETFILTER_DROP), reason=REASON, rule~TEXT (a substring of the rule as\n",
    "  printed; iptables rules start with `-A CHAIN`), pod=NAMESPACE/NAME, iface=NAME.\n",
    "  It fires when the matching drops (exact kernel counts) average RATE/s over DURATION (default 1s).\n",
    "Examples:\n",
    "  tracer watch --trigger 'NETFILTER_DROP at >=50/s for 5s'\n",
    "  tracer watch --trigger 'fw: rule~KUBE-FIREWALL at 10/s' --trigger 'pod=default/web-0 at 1/s for 30s'\n",
    "\n",
    "Metrics: tracer_drops_total{reason,location,ifname,netns,pod,rule}, tracer_lost_events_total,\n",
    "tracer_recorder_bytes, tracer_recorder_evicted_total, tracer_dumps_total{trigger},\n",
    "tracer_info{version,kernel,probe,node} (see README, \"Leave it running\")."
);

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// Serve /metrics, /healthz, /readyz and POST /dump on ADDR:PORT; `none` serves nothing.
    #[arg(long, value_name = "ADDR:PORT|none", default_value = DEFAULT_LISTEN)]
    pub listen: String,

    /// A file holding a token: POST /dump then needs `Authorization: Bearer TOKEN`. Without
    /// it, /dump answers only clients on this host (loopback).
    #[arg(long, value_name = "FILE")]
    pub dump_token_file: Option<PathBuf>,

    /// At most N label sets per metric; past it new ones fold into `other` label values
    /// (counted by `tracer_series_folded_total`).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub max_series: usize,

    /// Keep drops in memory this long (oldest evicted first).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m", value_name = "DURATION")]
    pub keep: Duration,

    /// At most this much memory for the kept drops (e.g. 64MiB, 512KiB).
    #[arg(long, value_parser = parse_size, default_value = "64MiB", value_name = "SIZE")]
    pub keep_bytes: u64,

    /// Dump when this happens (repeatable): see the grammar below.
    #[arg(long = "trigger", value_name = "SPEC")]
    pub triggers: Vec<String>,

    /// Where dumps go (created if missing); each is DIR/NAME.tar.zst.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DUMP_DIR)]
    pub dump_dir: PathBuf,

    /// A dump holds the drops up to this long after its trigger.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s", value_name = "DURATION")]
    pub after: Duration,

    /// At most one dump per trigger this often (SIGUSR1 and POST /dump are triggers too).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m", value_name = "DURATION")]
    pub dump_interval: Duration,

    /// Keep at most N dumps in the directory (oldest removed).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub dump_max: usize,

    /// This node's name in `tracer_info`, dumps and MANIFEST [default: `$NODE_NAME`, else the host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// Create FILE once every probe is attached and the server listens, holding the address
    /// it listens on (for scripts and tests; `--listen 127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "FILE", hide = true)]
    pub ready_file: Option<PathBuf>,

    /// Only drops on this interface; a name or a glob (e.g. lxc*). Repeatable.
    #[arg(help_heading = "Filters", short = 'i', long = "iface", value_name = "NAME|GLOB")]
    pub ifaces: Vec<String>,

    /// Only drops in this network namespace (path, name under /var/run/netns, or inode).
    #[arg(help_heading = "Filters", long, value_name = "PATH|INODE")]
    pub netns: Option<String>,

    /// Only drops of this pod (NAMESPACE/NAME). Repeatable.
    #[arg(help_heading = "Filters", long = "pod", value_name = "NAMESPACE/NAME")]
    pub pods: Vec<String>,

    /// Bytes of each dropped packet kept.
    #[arg(short = 's', long, default_value_t = 256, value_name = "N")]
    pub snaplen: u32,

    /// Do not attach netfilter observers (the `rule` label stays empty).
    #[arg(help_heading = "Probes", long)]
    pub no_netfilter: bool,

    /// Do not attach tc observers.
    #[arg(help_heading = "Probes", long)]
    pub no_tc: bool,

    /// At most N drop events per second per CPU (0: no limit); the metrics stay exact. Lower
    /// than capture's 20,000: events feed the flight recorder, and under a drop flood a
    /// recorder of a few thousand drops a second is evidence enough, at a tenth of the CPU.
    #[arg(help_heading = "Probes", long, default_value_t = 2_000, value_name = "N")]
    pub max_event_rate: u64,

    /// libcni's cache directory, followed while running [default: /var/lib/cni].
    #[arg(long, value_name = "DIR")]
    pub cni_cache_dir: Option<PathBuf>,

    /// The bpffs where Cilium pins its maps (as `capture --cilium-bpffs`): drops by Cilium's
    /// programs carry Cilium's own reason in dumps.
    #[arg(long, value_name = "DIR", default_value = super::DEFAULT_BPFFS)]
    pub cilium_bpffs: PathBuf,

    /// Accepted for symmetry with capture; unused.
    #[arg(long, hide = true)]
    pub quiet: bool,

    /// tcpdump/pcap-filter expression selecting the drops watched.
    #[arg(help_heading = "Filters", value_name = "EXPRESSION", trailing_var_arg = true)]
    pub expression: Vec<String>,
}

impl WatchArgs {
    /// The capture options the shared start-up path takes.
    pub fn capture_args(&self) -> CaptureArgs {
        CaptureArgs {
            duration: None,
            ifaces: self.ifaces.clone(),
            netns: self.netns.clone(),
            snaplen: self.snaplen,
            pcap: None,
            json: None,
            summary: None,
            bundle: None,
            ready_file: None,
            progress_file: None,
            no_netfilter: self.no_netfilter,
            no_tc: self.no_tc,
            stack: false,
            pods: self.pods.clone(),
            cni_cache_dir: self.cni_cache_dir.clone(),
            cilium_bpffs: self.cilium_bpffs.clone(),
            path: false,
            all: false,
            backend: crate::probes::path::BackendChoice::Auto,
            max_event_rate: self.max_event_rate,
            quiet: true,
            node_name: Some(self.node()),
            expression: self.expression.clone(),
        }
    }

    /// `--node-name`, else `$NODE_NAME`, else the host name.
    pub fn node(&self) -> String {
        super::node_name(self.node_name.as_deref())
    }
}

/// `64MiB`, `512KiB`, `1GiB`, `1000000` (bytes); `k`/`M`/`G` are powers of 1024 too.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size; write e.g. 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
