//! `testbed-node`: builds a testbed [`Node`] and keeps it until stdin closes or SIGTERM, for
//! tools outside Rust tests (`cargo xtask bench`, manual experiments). Prints one JSON line
//! describing the node once it is up, and removes everything on the way out. SIGINT and SIGHUP
//! are ignored: a Ctrl-C meant for the parent must not take the node down under it; the parent
//! dying closes our stdin, which does.
use std::{
    io::Write as _,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::Result;
use clap::Parser;
use integration_tests::{Node, NodeOptions};

static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Parser, Debug)]
#[command(about = "Build a netns node with Cilium-like pods and keep it until stdin closes")]
struct Args {
    /// Prefix of the namespace names (`<prefix><k>node`, `<prefix><k>p<i>`).
    #[arg(long, default_value = "tb")]
    prefix: String,
    /// First two octets of the node's /16.
    #[arg(long, default_value = "10.210", value_parser = parse_range)]
    range: [u8; 2],
    #[arg(long, default_value_t = 2)]
    pods: usize,
    /// Dual-stack: pods get `fd00:A:B:k::(10+i)` too.
    #[arg(long)]
    ipv6: bool,
    /// Print `iptables-nft-restore --noflush` input for about N kube-proxy-like rules (see
    /// `integration_tests::rules`) and exit without building a node.
    #[arg(long, value_name = "N")]
    print_kube_rules: Option<usize>,
}

fn parse_range(s: &str) -> Result<[u8; 2], String> {
    let (a, b) = s.split_once('.').ok_or("expected A.B, e.g. 10.210")?;
    Ok([a.parse().map_err(|e| format!("{a}: {e}"))?, b.parse().map_err(|e| format!("{b}: {e}"))?])
}

extern "C" fn on_term(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testbed-node: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if let Some(n) = args.print_kube_rules {
        std::io::stdout().lock().write_all(integration_tests::rules::kube_proxy_like(n).as_bytes())?;
        return Ok(());
    }
    // SAFETY: ignoring signals, and a handler that only stores to an atomic (installed without
    // SA_RESTART so the blocking read below returns EINTR).
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_term as *const () as libc::sighandler_t;
        libc::sigaction(libc::SIGTERM, &raw const sa, std::ptr::null_mut());
    }
    let node = Node::with_options(NodeOptions { prefix: args.prefix.clone(), range: args.range, pods: args.pods, ipv6: args.ipv6 })?;
    let pods: Vec<_> = node
        .pods()
        .iter()
        .map(|p| {
            serde_json::json!({
                "netns": p.netns, "ip": p.ip.to_string(), "ip6": p.ip6.map(|a| a.to_string()), "eth": p.eth, "eth_ifindex": p.eth_ifindex,
                "lxc": p.lxc, "lxc_ifindex": p.lxc_ifindex,
            })
        })
        .collect();
    let desc = serde_json::json!({
        "node": node.netns(), "gateway": node.gateway().to_string(), "gateway6": node.gateway6().map(|a| a.to_string()), "netns_inode": node.netns_inode()?, "pods": pods,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{desc}")?;
    out.flush()?;
    drop(out);
    wait_for_eof_or_term();
    drop(node);
    Ok(())
}

/// Reads stdin until EOF (or an error), or until SIGTERM interrupts the read.
fn wait_for_eof_or_term() {
    let mut buf = [0u8; 256];
    while !STOP.load(Ordering::Relaxed) {
        // SAFETY: reading into a buffer we own, of the given length.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            break;
        }
    }
}
