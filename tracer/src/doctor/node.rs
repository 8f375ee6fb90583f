//! What the node's network namespace looks like, read through `ip -j` (netlink answers for the
//! namespace the process is in; sysfs would show the namespace it was mounted in) and
//! commands run with a bounded wait.
use std::{
    io::Read as _,
    net::IpAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

impl Link {
    /// Cilium's host-side pod interfaces.
    pub fn is_lxc(&self) -> bool {
        self.name.starts_with("lxc") && self.name != "lxc_health"
    }
}

/// Runs a command to completion within `COMMAND_TIMEOUT`; its stdout, or an error naming it.
/// `Ok(None)` when the program is not installed.
pub fn run(program: &str, args: &[&str]) -> Result<Option<String>> {
    let mut child = match Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot run {program}")),
    };
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().context("no stdout pipe")?;
    let mut err = child.stderr.take().context("no stderr pipe")?;
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} {} did not finish within {}s", args.join(" "), COMMAND_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        let msg = String::from_utf8_lossy(&stderr);
        bail!("{program} {} failed ({status}): {}", args.join(" "), msg.lines().next().unwrap_or("").trim());
    }
    Ok(Some(String::from_utf8_lossy(&stdout).into_owned()))
}

fn ip_json(args: &[&str]) -> Result<Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let text = run("ip", &full)?.context("the `ip` command (iproute2) is not installed")?;
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).with_context(|| format!("cannot parse `ip -j {}` output", args.join(" ")))
}

pub fn links() -> Result<Vec<Link>> {
    let v = ip_json(&["link", "show"])?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    Some(Link {
                        ifindex: u32::try_from(l["ifindex"].as_u64()?).ok()?,
                        name: l["ifname"].as_str()?.to_string(),
                        mac: l["address"].as_str().and_then(parse_mac),
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The device a packet to `dst` leaves by, per the routing table.
pub fn route_dev(dst: IpAddr) -> Option<String> {
    let v = ip_json(&["route", "get", &dst.to_string()]).ok()?;
    v.get(0)?.get("dev")?.as_str().map(str::to_string)
}

/// Neighbour entries per family: (IPv4, IPv6).
pub fn neighbour_counts() -> Result<(usize, usize)> {
    let count = |v: Value| v.as_array().map_or(0, Vec::len);
    Ok((count(ip_json(&["-4", "neigh", "show"])?), count(ip_json(&["-6", "neigh", "show"])?)))
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A sysctl under /proc/sys (per network namespace for net.*), as a trimmed string.
pub fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}")).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:fc:00:00:00:01"), Some([2, 0xfc, 0, 0, 0, 1]));
        assert_eq!(parse_mac("02:fc:00:00:00"), None);
        assert_eq!(parse_mac("02:fc:00:00:00:01:02"), None);
        assert_eq!(fmt_mac([2, 0xfc, 0, 0, 0, 1]), "02:fc:00:00:00:01");
    }
}
