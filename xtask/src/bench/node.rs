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
    /// Bound on building or removing this node.
    bound: Duration,
}

/// What node to build: names, range, pods (the first two carry the traffic).
pub struct Shape<'a> {
    pub prefix: &'a str,
    pub range: &'a str,
    pub pods: usize,
    pub conntrack: bool,
}

impl Node {
    /// Builds a two-pod node with `testbed-node` and installs the flood's DROP rule in its
    /// FORWARD chain (first, so the rest of the ruleset never sees flood packets) and a DROP
    /// rule for another port in INPUT (so netfilter observers are needed); with
    /// `conntrack`, also a nat MASQUERADE rule for traffic leaving the pod range (which makes
    /// conntrack see every packet, as on a node with kube-proxy or Cilium's iptables rules).
    pub fn start(helper: &Path, conntrack: bool) -> Result<Self> {
        Self::start_with(helper, &Shape { prefix: PREFIX, range: RANGE, pods: 2, conntrack })
    }

    /// [`Node::start`] with another shape (the scale arm's node has a hundred pods more).
    pub fn start_with(helper: &Path, shape: &Shape<'_>) -> Result<Self> {
        let (conntrack, range) = (shape.conntrack, shape.range);
        // A few dozen `ip` calls per pod.
        let bound = NODE_TIMEOUT * u32::try_from(1 + shape.pods / 20).unwrap_or(10);
        let mut child = Command::new(helper)
            .args(["--prefix", shape.prefix, "--range", range, "--pods", &shape.pods.to_string()])
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
        let mut node = Self { netns: String::new(), netns_inode: 0, pods: Vec::new(), child: Some(child), stdin, bound };
        let line = rx
            .recv_timeout(bound)
            .map_err(|_| anyhow!("testbed-node did not report a node within {bound:?}"))?;
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
        let rule = node.flood_rule();
        let mut args: Vec<&str> = rule.split(' ').collect();
        args.splice(0..2, ["-I", "FORWARD", "1"]);
        node.iptables(&args)?;
        // A second chain that can drop, as a node firewall's INPUT rule (kube-proxy's
        // KUBE-FIREWALL): a netfilter drop could come from either, so the tracer places
        // observers. With one chain that can drop and no conntrack it needs none (it reads a
        // small ruleset at start), and the arms "with observers" would measure none. They go
        // at INPUT and OUTPUT; FORWARD's one chain is told by a drop's route (`ip_forward`),
        // so the forwarded traffic passes none: what the drop arm measures is that placement.
        node.iptables(&["-A", "INPUT", "-p", "tcp", "--dport", "10255", "-m", "comment", "--comment", "bench-input", "-j", "DROP"])?;
        if conntrack {
            let range = format!("{range}.0.0/16");
            node.iptables(&[
                "-t", "nat", "-A", "POSTROUTING", "-s", &range, "!", "-d", &range, "-m", "comment", "--comment", "bench-masq", "-j",
                "MASQUERADE",
            ])?;
        }
        Ok(node)
    }

    /// The flood's DROP rule as `iptables-save` prints it (`-A FORWARD …`, no quoting needed).
    pub fn flood_rule(&self) -> String {
        format!("-A FORWARD -d {}/32 -p udp -m udp --dport {FLOOD_PORT} -m comment --comment {RULE_COMMENT} -j DROP", self.pods[1].ip)
    }

    /// Replaces the tables `text` names (`iptables-nft-restore` input) in the node namespace.
    pub fn restore(&self, text: &str) -> Result<()> {
        let file = std::env::temp_dir().join(format!("tracer-bench-rules-{}", std::process::id()));
        std::fs::write(&file, format!("{}\n", text.trim_end())).with_context(|| format!("cannot write {}", file.display()))?;
        let r = proc::output("ip", &["netns", "exec", &self.netns, "iptables-nft-restore", "-w", &file.display().to_string()], Duration::from_mins(5));
        let _ = std::fs::remove_file(&file);
        r.map(drop)
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
                    Ok(None) if start.elapsed() > self.bound => {
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
