//! `tracer doctor`: read-only checks of the node state that breaks pod networking without a
//! single "drop" to show for it (the seed's incidents 1 and 2). Exit 0 healthy, 1 findings,
//! 2 could not check.
pub mod cilium;
pub mod cilium_policy;
pub mod cni;
pub mod host;
pub mod kernel;
pub mod netfilter;
pub mod node;
pub mod report;

use std::{net::IpAddr, path::Path};

use anyhow::{Result, anyhow};

use crate::{args::DoctorArgs, netfilter::packet::Cidr};
use report::{Outcome, Report, Scope};

/// Runs every check and prints the report; returns the exit code.
pub fn run(args: &DoctorArgs) -> u8 {
    match collect(args) {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            report.exit_code
        }
        Err(e) => {
            eprintln!("tracer: error: {e:#}");
            2
        }
    }
}

fn parse_cidr(s: &str) -> Result<Cidr> {
    Cidr::parse(s).ok_or_else(|| {
        if s.split('/').next().is_some_and(|ip| ip.parse::<IpAddr>().is_ok()) {
            anyhow!("--pod-cidr {s:?}: bad prefix length")
        } else {
            anyhow!("--pod-cidr {s:?} is not a CIDR such as 10.0.1.0/24")
        }
    })
}

/// Runs every check; the report, or why the checks could not start.
pub fn collect(args: &DoctorArgs) -> Result<Report> {
    let pod_cidrs = args.pod_cidrs.iter().map(|c| parse_cidr(c)).collect::<Result<Vec<_>>>()?;
    let netns_path = args.netns.as_deref().map(crate::netns::path_of).transpose()?;
    let mut report = Report::new(Scope {
        netns: netns_path.as_ref().map_or_else(|| "self".to_string(), |p| p.display().to_string()),
        bpffs: args.bpffs.display().to_string(),
        cni_cache_dir: cni::results_dir(&args.cni_cache_dir).display().to_string(),
        netns_dir: args.netns_dir.display().to_string(),
    });

    // Kernel facts do not depend on the namespace; probe from where we started.
    kernel::check(&mut report);

    let _guard = netns_path.as_deref().map(crate::netns::enter).transpose()?;
    node_checks(&mut report, args, &pod_cidrs);
    report.finish();
    Ok(report)
}

fn node_checks(report: &mut Report, args: &DoctorArgs, pod_cidrs: &[Cidr]) {
    let links = node::links();
    let cni = cni::load(&args.cni_cache_dir);
    let cilium = cilium::load(&args.bpffs);

    let links_ok = match &links {
        Ok(l) => l.as_slice(),
        Err(_) => &[],
    };
    let cilium_host = links_ok.iter().any(|l| l.name == "cilium_host");
    let pinned = cilium.as_ref().is_ok_and(|c| c.pinned);
    let datapath = match (cilium_host, pinned) {
        (true, true) => Some(format!("cilium_host device and pinned maps under {}", args.bpffs.display())),
        (true, false) => Some("cilium_host device".to_string()),
        (false, true) => Some(format!("pinned cilium_* maps under {}", args.bpffs.display())),
        (false, false) => None,
    };

    let nf = netfilter::collect();
    report.record("netfilter.backends", netfilter::check_backends(&nf));
    report.record("netfilter.cilium", netfilter::check_cilium(&nf, datapath.as_deref()));
    report.record("netfilter.kube-proxy", netfilter::check_kube(&nf));
    let probe = pod_probe(links_ok, cni.as_ref(), cilium.as_ref().ok());
    report.record("netfilter.forward", netfilter::check_forward(&nf, probe.as_ref()));

    let links = links.map_err(|e| format!("cannot list interfaces: {e:#}"));

    match &cilium {
        Ok(st) if st.pinned => {
            let outcome = match &links {
                Ok(l) => cilium::check_endpoints(st, l, cni.as_ref()),
                Err(e) => Outcome::Error(e.clone()),
            };
            report.record("cilium.endpoints", outcome);
            report.record("cilium.ipcache", cilium::check_ipcache(st, cni.as_ref(), pod_cidrs));
            report.record("cilium.policy", cilium_policy::check_policy(&args.bpffs));
        }
        Ok(st) => {
            let why = format!("no pinned Cilium maps under {}", st.globals.display());
            report.record("cilium.endpoints", Outcome::Skipped(why.clone()));
            report.record("cilium.ipcache", Outcome::Skipped(why.clone()));
            report.record("cilium.policy", Outcome::Skipped(why));
        }
        // The default location not being a bpffs just means no Cilium state to check; a path
        // the user named is expected to be one.
        Err(e) if args.bpffs == Path::new(crate::args::DEFAULT_BPFFS) => {
            report.record("cilium.endpoints", Outcome::Skipped(e.clone()));
            report.record("cilium.ipcache", Outcome::Skipped(e.clone()));
            report.record("cilium.policy", Outcome::Skipped(e.clone()));
        }
        Err(e) => {
            report.record("cilium.endpoints", Outcome::Error(e.clone()));
            report.record("cilium.ipcache", Outcome::Error(e.clone()));
            report.record("cilium.policy", Outcome::Error(e.clone()));
        }
    }

    match &links {
        Ok(l) => {
            report.record("host.forwarding", host::check_forwarding(l, datapath.is_some()));
            report.record("host.rp-filter", host::check_rp_filter(l));
            report.record("host.pod-interfaces", host::check_pod_interfaces(l, cni.as_ref()));
        }
        Err(e) => {
            for c in ["host.forwarding", "host.rp-filter", "host.pod-interfaces"] {
                report.record(c, Outcome::Error(e.clone()));
            }
        }
    }
    report.record("host.conntrack", host::check_conntrack());
    report.record("host.neighbours", host::check_neighbours());
    report.record("host.netns", host::check_leftover_netns(&args.netns_dir));
}

/// A pod of this node to walk through FORWARD: an lxc interface and, if known, its IPv4.
fn pod_probe(links: &[node::Link], cni: Option<&cni::CniCache>, cilium: Option<&cilium::CiliumState>) -> Option<netfilter::PodProbe> {
    let present: std::collections::HashSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
    // Prefer a pod the CNI cache knows, with its interface present and an IPv4.
    if let Some(cni) = cni {
        for r in &cni.results {
            let iface = r.host_ifaces.iter().find(|i| present.contains(i.as_str()));
            let ip = r.ips.iter().find(|i| i.is_ipv4());
            if let (Some(iface), Some(ip)) = (iface, ip) {
                return Some(netfilter::PodProbe { pod_iface: iface.clone(), pod_ip: Some(*ip) });
            }
        }
    }
    let lxc = links.iter().find(|l| l.is_lxc())?;
    let ip = cilium
        .and_then(|c| c.endpoints.as_ref())
        .and_then(|e| e.as_ref().ok())
        .and_then(|eps| eps.iter().find(|e| e.ifindex == lxc.ifindex && e.ip.is_ipv4()).map(|e| e.ip));
    Some(netfilter::PodProbe { pod_iface: lxc.name.clone(), pod_ip: ip })
}
