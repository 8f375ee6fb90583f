//! Command line (clap): the subcommands, each with its options from `args/`. Flag and field
//! names are a contract: scripts and the tests use them.
use clap::{Parser, Subcommand};

use crate::args::{CaptureArgs, DoctorArgs, MergeArgs, ReportArgs, WatchArgs};

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
    #[command(after_help = crate::args::watch::AFTER_HELP)]
    Watch(WatchArgs),
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
    /// For `cargo xtask bench`: an empty program on tracepoints (what attaching anything there costs).
    #[command(hide = true)]
    Floor(crate::floor::FloorArgs),
}
