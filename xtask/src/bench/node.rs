//! The node the bench drives: the testbed's own topology (integration-tests' `Node`), held by
//! its `testbed-node` binary until we close its stdin. If this process dies, the pipe closes
//! and the node removes itself; the bench's DROP rule lives in the node namespace and goes
//! with it.
use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::proc;

/// Name prefix and range of the bench's node (distinct from the test suites').
pub const PREFIX: &str = "bench";
pub const RANGE: &str = "10.247";
/// The flood's destination port; the DROP rule matches only it.
pub const FLOOD_PORT: u16 = 9999;
/// Comment of the DROP rule (its counter is how the floods are checked).
const RULE_COMMENT: &str = "bench-flood";
/// Bound on building or removing the node (a few dozen `ip` calls; slow on a busy machine).
const NODE_TIMEOUT: Duration = Duration::from_mins(1);

#[derive(Debug, Clone)]
pub struct Pod {
    pub netns: String,
    pub ip: Ipv4Addr,
}

pub struct Node {
    pub netns: String,
    /// Inode of the node namespace (what bpftrace and the tracer report as the netns).
    pub netns_inode: u64,
    pub pods: Vec<Pod>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Node {
    /// Builds a two-pod node with `testbed-node` and installs the flood's DROP rule in its
    /// FORWARD chain (first, so the rest of the ruleset never sees flood packets); with
    /// `conntrack`, also a nat MASQUERADE rule for traffic leaving the pod range (which makes
    /// conntrack see every packet, as on a node with kube-proxy or Cilium's iptables rules).
    pub fn start(helper: &Path, conntrack: bool) -> Result<Self> {
        let mut child = Command::new(helper)
            .args(["--prefix", PREFIX, "--range", RANGE, "--pods", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {}", helper.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut node = Self { netns: String::new(), netns_inode: 0, pods: Vec::new(), child: Some(child), stdin };
        let line = rx
            .recv_timeout(NODE_TIMEOUT)
            .map_err(|_| anyhow!("testbed-node did not report a node within {NODE_TIMEOUT:?}"))?;
        if line.trim().is_empty() {
            bail!("testbed-node failed to build the node (see its error above)");
        }
        let desc: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("testbed-node printed {line:?}"))?;
        node.netns = desc["node"].as_str().context("no node name")?.to_string();
        node.netns_inode = desc["netns_inode"].as_u64().context("no node netns inode")?;
        for p in desc["pods"].as_array().context("no pods")? {
            node.pods.push(Pod {
                netns: p["netns"].as_str().context("pod netns")?.to_string(),
                ip: p["ip"].as_str().context("pod ip")?.parse()?,
            });
        }
        if node.pods.len() < 2 {
            bail!("testbed-node built {} pods, the bench needs 2", node.pods.len());
        }
        let dst = format!("{}/32", node.pods[1].ip);
        let port = FLOOD_PORT.to_string();
        node.iptables(&[
            "-I", "FORWARD", "1", "-d", &dst, "-p", "udp", "--dport", &port, "-m", "comment", "--comment", RULE_COMMENT, "-j",
            "DROP",
        ])?;
        if conntrack {
            let range = format!("{RANGE}.0.0/16");
            node.iptables(&[
                "-t", "nat", "-A", "POSTROUTING", "-s", &range, "!", "-d", &range, "-m", "comment", "--comment", "bench-masq", "-j",
                "MASQUERADE",
            ])?;
        }
        Ok(node)
    }

    fn iptables(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["netns", "exec", &self.netns, "iptables", "-w"];
        full.extend_from_slice(args);
        proc::output("ip", &full, Duration::from_secs(30))
    }

    /// Packets the flood's DROP rule has dropped so far.
    pub fn rule_packets(&self) -> Result<u64> {
        let out = self.iptables(&["-vnxL", "FORWARD"])?;
        let needle = format!("/* {RULE_COMMENT} */");
        let line = out.lines().find(|l| l.contains(&needle)).ok_or_else(|| anyhow!("the bench's DROP rule is gone:\n{out}"))?;
        line.split_whitespace().next().context("empty rule line")?.parse().with_context(|| format!("bad counter in {line:?}"))
    }

    /// A counter of a namespace's /proc/net/snmp (e.g. `Udp` `RcvbufErrors`).
    pub fn snmp(netns: &str, group: &str, field: &str) -> Result<u64> {
        let text = proc::output("ip", &["netns", "exec", netns, "cat", "/proc/net/snmp"], Duration::from_secs(10))?;
        let prefix = format!("{group}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (Some(h), Some(v)) = (lines.next(), lines.next()) else { bail!("no {group} in /proc/net/snmp of {netns}") };
        let i = h.split_whitespace().position(|x| x == field).ok_or_else(|| anyhow!("no {group} {field}"))?;
        v.split_whitespace().nth(i).context("short snmp line")?.parse().context("bad snmp value")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Closing stdin is the signal; testbed-node removes the rule's namespace and the rest.
        drop(self.stdin.take());
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if start.elapsed() > NODE_TIMEOUT => {
                        eprintln!("xtask: bench: testbed-node did not finish its cleanup; killed (namespaces {PREFIX}* may remain)");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}
