//! The loads, pod-a → pod-b through the node: 64-byte UDP (udpblast, sendmmsg/recvmmsg), TCP
//! (iperf3) and the drop flood into the node's DROP rule. The sender is pinned to one CPU and
//! the receiver to the other: the forward path runs in softirq on the sender's CPU, which is the
//! bottleneck, as on the reference measurements.
use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use super::{
    machine::{self, CpuUse},
    node::{FLOOD_PORT, Node},
    proc::{self, Proc},
};

pub const SENDER_CPU: usize = 0;
pub const RECEIVER_CPU: usize = 1;
const UDP_PORT: u16 = 7000;
const TCP_PORT: u16 = 5301;
const PAYLOAD: u16 = 64;
/// Slack on top of a load's own duration before it counts as hung.
const SLACK: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Measured {
    /// The headline value (k pps or Gbit/s).
    pub value: f64,
    pub cpu: CpuUse,
    pub details: Value,
}

fn udpblast(bin: &Path, args: &[String]) -> Command {
    let mut c = Command::new(bin);
    c.args(args);
    c
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// 64-byte UDP for `seconds`: datagrams the receiving socket got, per second of sending.
pub fn udp(node: &Node, blast: &Path, seconds: f64) -> Result<Measured> {
    let (a, b) = (&node.pods[0], &node.pods[1]);
    let rcvbuf_before = Node::snmp(&b.netns, "Udp", "RcvbufErrors")?;
    let mut rx = Proc::spawn(&mut udpblast(
        blast,
        &[
            "recv".into(), "--netns".into(), b.netns.clone(), "--cpu".into(), RECEIVER_CPU.to_string(), "--bind".into(),
            format!("{}:{UDP_PORT}", b.ip), "--seconds".into(), format!("{}", seconds + 15.0), "--idle-ms".into(), "300".into(),
        ],
    ))?;
    rx.wait_line(|l| l == "ready", Duration::from_secs(10))?;
    let t0 = machine::cpu_times()?;
    let sent = run_json(&mut udpblast(
        blast,
        &[
            "send".into(), "--netns".into(), a.netns.clone(), "--cpu".into(), SENDER_CPU.to_string(), "--from".into(),
            format!("{}:{}", a.ip, UDP_PORT + 1), "--to".into(), format!("{}:{UDP_PORT}", b.ip), "--size".into(),
            PAYLOAD.to_string(), "--seconds".into(), seconds.to_string(),
        ],
    ), secs(seconds) + SLACK)?;
    let cpu = CpuUse::between(&t0, &machine::cpu_times()?);
    let exit = rx.wait(Duration::from_secs(10))?;
    if !exit.success() {
        bail!("udpblast recv failed: {}", rx.stderr_text().trim());
    }
    let got: Value = last_json(&rx.stdout_lines()).context("udpblast recv printed no result")?;
    let received = got["received"].as_u64().context("no received count")?;
    let n_sent = sent["sent"].as_u64().context("no sent count")?;
    let send_s = sent["seconds"].as_f64().context("no send time")?;
    let rcvbuf_errors = Node::snmp(&b.netns, "Udp", "RcvbufErrors")?.saturating_sub(rcvbuf_before);
    #[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
    let kpps = received as f64 / send_s / 1000.0;
    #[expect(clippy::cast_precision_loss, reason = "as above")]
    let (sent_kpps, delivered) = (n_sent as f64 / send_s / 1000.0, received as f64 / n_sent.max(1) as f64);
    Ok(Measured {
        value: kpps,
        cpu,
        details: json!({
            "sent": n_sent, "received": received, "send_errors": sent["errors"], "seconds": send_s,
            "sent_kpps": super::stats::round(sent_kpps, 1), "delivered": super::stats::round(delivered, 4),
            "rcvbuf_errors": rcvbuf_errors,
        }),
    })
}

/// iperf3 for `seconds` (whole seconds: iperf3's `-t`): the receiver's Gbit/s.
pub fn tcp(node: &Node, seconds: u32) -> Result<Measured> {
    let (a, b) = (&node.pods[0], &node.pods[1]);
    let port = TCP_PORT.to_string();
    let bip = b.ip.to_string();
    let mut server = Proc::spawn(Command::new("ip").args([
        "netns", "exec", &b.netns, "taskset", "-c", &RECEIVER_CPU.to_string(), "iperf3", "-s", "-1", "-B", &bip, "-p", &port,
    ]))?;
    wait_listening(&b.netns, TCP_PORT, &mut server)?;
    let t0 = machine::cpu_times()?;
    let out = run_json(
        Command::new("ip").args([
            "netns", "exec", &a.netns, "taskset", "-c", &SENDER_CPU.to_string(), "iperf3", "-c", &bip, "-p", &port, "-t",
            &seconds.to_string(), "-J",
        ]),
        Duration::from_secs(u64::from(seconds)) + SLACK,
    )?;
    let cpu = CpuUse::between(&t0, &machine::cpu_times()?);
    let _ = server.wait(Duration::from_secs(10));
    let bps = out["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| anyhow!("iperf3 reported no receiver rate"))?;
    Ok(Measured {
        value: bps / 1e9,
        cpu,
        details: json!({ "retransmits": out["end"]["sum_sent"]["retransmits"], "seconds": out["end"]["sum_received"]["seconds"] }),
    })
}

/// Polls until the iperf3 server listens (its own output is block-buffered when piped).
fn wait_listening(netns: &str, port: u16, server: &mut Proc) -> Result<()> {
    let filter = format!("sport = :{port}");
    for _ in 0..200 {
        if server.poll_exit()?.is_some() {
            bail!("iperf3 server exited: {}", server.stderr_text().trim());
        }
        let out = proc::output("ip", &["netns", "exec", netns, "ss", "-Hltn", &filter], Duration::from_secs(10))?;
        if !out.trim().is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("iperf3 server in {netns} did not listen on {port}")
}

/// Floods `packets` 64-byte datagrams (at most `seconds`) into the node's DROP rule: rate
/// sent, and how many the rule dropped.
pub fn flood(node: &Node, blast: &Path, packets: u64, seconds: f64) -> Result<(Measured, u64)> {
    let (a, b) = (&node.pods[0], &node.pods[1]);
    let before = node.rule_packets()?;
    let t0 = machine::cpu_times()?;
    let sent = run_json(&mut udpblast(
        blast,
        &[
            "send".into(), "--netns".into(), a.netns.clone(), "--cpu".into(), SENDER_CPU.to_string(), "--from".into(),
            format!("{}:{}", a.ip, FLOOD_PORT + 1), "--to".into(), format!("{}:{FLOOD_PORT}", b.ip), "--size".into(),
            PAYLOAD.to_string(), "--seconds".into(), seconds.to_string(), "--packets".into(), packets.to_string(),
        ],
    ), secs(seconds) + SLACK)?;
    let cpu = CpuUse::between(&t0, &machine::cpu_times()?);
    let dropped = node.rule_packets()?.saturating_sub(before);
    let n = sent["sent"].as_u64().context("no sent count")?;
    let s = sent["seconds"].as_f64().context("no send time")?;
    #[expect(clippy::cast_precision_loss, reason = "packet counts far below 2^52")]
    let kpps = n as f64 / s / 1000.0;
    Ok((
        Measured { value: kpps, cpu, details: json!({ "sent": n, "seconds": s, "send_errors": sent["errors"], "rule_drops": dropped }) },
        dropped,
    ))
}

/// Runs a command that prints one JSON object, within `timeout`.
fn run_json(c: &mut Command, timeout: Duration) -> Result<Value> {
    let mut p = Proc::spawn(c)?;
    let exit = p.wait(timeout)?;
    let lines = p.stdout_lines();
    if !exit.success() {
        bail!("`{}` failed ({}): {}", crate::cmd::display(c), exit.code, p.stderr_text().trim());
    }
    let text = lines.join("\n");
    serde_json::from_str(&text).with_context(|| format!("`{}` printed {text:?}", crate::cmd::display(c)))
}

fn last_json(lines: &[String]) -> Option<Value> {
    lines.iter().rev().find_map(|l| serde_json::from_str(l).ok())
}
