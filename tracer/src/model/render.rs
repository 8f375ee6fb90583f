//! Every text form of a record, in one place: the stdout line and pcapng comment of a drop,
//! the summary sentence of a tc finding, a followed packet's timeline (like pwru's, one line
//! per hook with interface and namespace, then the fate) and its pcapng comment.
use std::fmt::Write as _;

use super::{
    cilium::{CiliumInfo, CiliumReason},
    conntrack::Ct,
    drop::DropEvent,
    headers::Headers,
    path::PacketRecord,
    tc::TcInfo,
};

/// An interface name as text: `(no device)` when the drop point had none.
pub fn device(name: &str) -> &str {
    if name.is_empty() { "(no device)" } else { name }
}

/// tcpdump-like one-liner: time, interface, reason, location, flow.
pub fn drop_line(e: &DropEvent) -> String {
    let what = e.headers.summary();
    let pod = e.pod_iface.as_deref().map(|p| format!(" (pod {p})")).unwrap_or_default();
    let by = e.tc.as_ref().map(|t| format!(" by {}", t.who())).unwrap_or_default();
    let cilium = e.cilium.as_ref().map(|c| format!(" [{}]", cilium_text(c))).unwrap_or_default();
    let clock = e.time.get(11..).unwrap_or(&e.time);
    format!("{clock} {}{pod} {} at {}: {what} len {}{by}{cilium}", device(&e.ifname), e.reason, e.location, e.len)
}

/// The pcapng comment of a dropped packet: `drop reason=… location=… iface=… netns=…` and
/// whatever enrichment found.
pub fn drop_comment(ev: &DropEvent) -> String {
    let mut comment = format!("drop reason={} location={} iface={} netns={}", ev.reason, ev.location, device(&ev.ifname), ev.netns);
    if let Some(nf) = &ev.netfilter {
        let _ = write!(comment, " netfilter=\"{} {} {} {}: {}\"", nf.backend, nf.family, nf.table, nf.chain, nf.rule.as_deref().unwrap_or("?"));
    }
    if let Some(tc) = &ev.tc {
        let _ = write!(comment, " tc=\"{} {} {}", tc.attach.unwrap_or("?"), tc.direction, tc.prog.as_deref().unwrap_or("?"));
        if let Some(id) = tc.prog_id {
            let _ = write!(comment, " id {id}");
        }
        let _ = write!(comment, " {}\"", tc.verdict);
    }
    if let Some(c) = &ev.cilium {
        let _ = write!(comment, " cilium=\"{}\"", cilium_text(c));
    }
    for (k, v) in [("pod_iface", &ev.pod_iface), ("src_pod", &ev.src_pod), ("dst_pod", &ev.dst_pod)] {
        if let Some(v) = v {
            let _ = write!(comment, " {k}={v}");
        }
    }
    if let Some(mark) = ev.mark.filter(|m| *m != 0) {
        let _ = write!(comment, " mark={mark:#x}");
    }
    if let Some(ct) = &ev.ct {
        let _ = write!(comment, " ct=\"{}\"", ct_text(ct));
    }
    if let Some(t) = ev.pkt_type {
        let _ = write!(comment, " pkt_type={t}");
    }
    if let Some(mtu) = ev.mtu {
        let _ = write!(comment, " mtu={mtu}");
    }
    if let Some(g) = ev.gso {
        let _ = write!(comment, " gso={}x{}", g.size, g.segs);
    }
    if let Some(frames) = &ev.stack {
        let _ = write!(comment, " stack=\"{}\"", short_stack(frames));
    }
    comment
}

/// `ESTABLISHED reply zone 0 mark 0x200 CONFIRMED|SEEN_REPLY`: the JSON's `ct` in one line.
pub fn ct_text(ct: &Ct) -> String {
    let mut s = ct.state.to_string();
    if let Some(d) = ct.direction {
        let _ = write!(s, " {d}");
    }
    if let Some(z) = ct.zone {
        let _ = write!(s, " zone {z}");
    }
    if let Some(m) = ct.mark {
        let _ = write!(s, " mark {m:#x}");
    }
    if let Some(status) = ct.status.as_ref().filter(|s| !s.is_empty()) {
        let _ = write!(s, " {}", status.join("|"));
    }
    s
}

/// Frames shown where space is short (the pcapng comment): function names without offsets,
/// innermost first, at most `SHORT_STACK`.
pub fn short_stack(frames: &[String]) -> String {
    const SHORT_STACK: usize = 6;
    let names: Vec<&str> = frames.iter().take(SHORT_STACK).map(|f| f.split_once('+').map_or(f.as_str(), |(n, _)| n)).collect();
    let more = if frames.len() > SHORT_STACK { " < …" } else { "" };
    format!("{}{more}", names.join(" < "))
}

/// "Policy denied (133) at `bpf_lxc.c:1412` egress": one metrics key, as every output names it.
pub fn cilium_reason(r: &CiliumReason) -> String {
    let dir = r.direction.map(|d| format!(" {d}")).unwrap_or_default();
    let at = match (&r.file, r.line) {
        (Some(f), Some(l)) => format!(" at {f}:{l}"),
        (Some(f), None) => format!(" at {f}"),
        (None, Some(l)) => format!(" at line {l}"),
        (None, None) => String::new(),
    };
    format!("{} ({}){at}{dir}", r.reason, r.code)
}

/// The reason part of a `cilium` section: the reason, or the candidates of an ambiguous
/// window, or that no drop counter moved (the summary's and the table's key).
pub fn cilium_reason_of(c: &CiliumInfo) -> String {
    match (&c.drop, c.candidates.as_slice()) {
        (Some(r), _) => cilium_reason(r),
        (None, []) => "no Cilium drop counter moved".into(),
        (None, many) => format!("ambiguous: {}", many.iter().map(cilium_reason).collect::<Vec<_>>().join(" | ")),
    }
}

/// A `cilium` section in one line: "Cilium: Policy denied (133) at `bpf_lxc.c:1412` egress;
/// endpoint 1234 lxc1 (pod ns/web); identity 3000 > 4000; policy `cilium_policy_01234`: no allow
/// entry for identity 4000 6/8080 egress; Cilium 1.14-1.16, metrics".
pub fn cilium_text(c: &CiliumInfo) -> String {
    let mut o = format!("Cilium: {}", cilium_reason_of(c));
    if let Some(e) = &c.endpoint {
        let pod = e.pod.as_deref().map(|p| format!(" (pod {p})")).unwrap_or_default();
        let _ = write!(o, "; endpoint {} {}{pod}", e.id, e.ifname);
    }
    if let Some(i) = &c.identity {
        let id = |v: Option<u32>, l: &Option<String>| {
            let l = l.as_deref().map(|l| format!(" {l}")).unwrap_or_default();
            v.map_or_else(|| "?".to_string(), |v| format!("{v}{l}"))
        };
        let _ = write!(o, "; identity {} > {}", id(i.src, &i.src_labels), id(i.dst, &i.dst_labels));
    }
    if let Some(p) = &c.policy {
        let _ = write!(o, "; policy {}: {}", p.map, p.decision);
        match &p.entry {
            Some(e) => {
                let _ = write!(o, " (identity {} {}/{} {})", e.identity, e.protocol, e.dport, p.direction);
            }
            None => {
                let _ = write!(o, " for identity {} {}/{} {}", p.identity, p.protocol, p.dport, p.direction);
            }
        }
    }
    let _ = write!(o, "; Cilium {}, {}", c.version, c.attribution);
    o
}

/// "dropped by BPF program `cil_from_container` on lxc5c0a11 (pod default/web-0), ingress"
pub fn tc_sentence(tc: &TcInfo, pod: Option<&str>) -> String {
    let pod = pod.map(|p| format!(" (pod {p})")).unwrap_or_default();
    let attach = tc.attach.map(|a| format!(" [{a}]")).unwrap_or_default();
    format!("dropped by {} on {}{pod}, {}{attach}", tc.who(), tc.ifname, tc.direction)
}

/// A packet in one line with its payload size: `udp 10.0.0.1.5 > 10.0.0.2.53 payload 6`
/// (`?` when its headers were never seen).
pub fn packet_line(h: &Headers) -> String {
    let payload = h.payload_len.map(|n| format!(" payload {n}")).unwrap_or_default();
    format!("{}{payload}", h.summary())
}

/// A followed packet's timeline: its hops with their time offsets, then its fate.
pub fn timeline(r: &PacketRecord) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "packet {}  {}", r.packet_id, packet_line(&r.headers));
    let width = r.path.iter().map(|h| h.hook.len()).max().unwrap_or(0);
    for h in &r.path {
        let dev = if h.ifname.is_empty() { "-" } else { h.ifname.as_str() };
        let _ = writeln!(o, "  {:>12}  {:<width$}  {dev:<15}  netns {}", format_offset(h.t_ns), h.hook, h.netns);
    }
    let _ = writeln!(o, "  => {}", r.fate);
    o
}

/// The pcapng comment of a packet written by `--all`.
pub fn packet_comment(r: &PacketRecord) -> String {
    let hops: Vec<String> = r
        .path
        .iter()
        .map(|h| if h.ifname.is_empty() { h.hook.clone() } else { format!("{}@{}", h.hook, h.ifname) })
        .collect();
    format!("packet {} path: {}; fate: {}", r.packet_id, hops.join(" > "), r.fate)
}

#[expect(clippy::cast_precision_loss, reason = "offsets within a packet's path, far below 2^52 ns, for display")]
fn format_offset(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("+{:.1}us", ns as f64 / 1e3)
    } else {
        format!("+{:.3}ms", ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::path::End, path::story::Stories};

    #[test]
    fn renders_hops_and_fate() {
        let mut s = Stories::new(4);
        s.hop(9, 1_000, "netif_receive_skb", "lxca", 11);
        s.hop(9, 4_200, "kfree_skb", "lxca", 11);
        let st = s.end(9, End::Dropped { reason: "NETFILTER_DROP".into(), location: "nft_do_chain+0x46f".into() }).unwrap();
        let headers = crate::model::headers::parse_headers(tracer_common::linktype::RAW_IP, &udp());
        let fate = st.fate();
        let r = PacketRecord { kind: "packet", packet_id: 9, time: String::new(), headers, path: st.hops, fate };
        let t = timeline(&r);
        assert!(t.starts_with("packet 9  udp 10.0.0.1.5 > 10.0.0.2.53 payload 2\n"), "{t}");
        assert!(t.contains("+0.0us  netif_receive_skb  lxca"), "{t}");
        assert!(t.contains("+3.2us  kfree_skb"), "{t}");
        assert!(t.ends_with("=> dropped: NETFILTER_DROP at nft_do_chain+0x46f\n"), "{t}");
        assert_eq!(packet_comment(&r), "packet 9 path: netif_receive_skb@lxca > kfree_skb@lxca; fate: dropped: NETFILTER_DROP at nft_do_chain+0x46f");
    }

    #[test]
    fn cilium_section_in_one_line() {
        use crate::model::cilium::{CiliumEndpoint, CiliumInfo, CiliumReason, Identities};
        let r = |code, reason: &str, line, packets| CiliumReason { reason: reason.into(), code, direction: Some("egress"), file: Some("bpf_lxc.c".into()), line: Some(line), packets };
        let mut c = CiliumInfo {
            drop: Some(r(133, "Policy denied", 1412, None)),
            endpoint: Some(CiliumEndpoint { id: 7, ifname: "lxc1".into(), pod: Some("default/web-0".into()) }),
            identity: Some(Identities { src: Some(3000), dst: Some(2), src_labels: None, dst_labels: Some("reserved:world".into()) }),
            policy: None,
            version: "1.14-1.16",
            attribution: "metrics",
            candidates: Vec::new(),
            hint: None,
        };
        assert_eq!(cilium_text(&c), "Cilium: Policy denied (133) at bpf_lxc.c:1412 egress; endpoint 7 lxc1 (pod default/web-0); identity 3000 > 2 reserved:world; Cilium 1.14-1.16, metrics");
        let mut old = r(133, "Policy denied", 0, None);
        (old.file, old.line) = (None, None);
        assert_eq!(cilium_reason(&old), "Policy denied (133) egress", "1.14/1.15 keys carry no file or line: none printed");
        c.drop = None;
        c.attribution = "ambiguous";
        c.candidates = vec![r(133, "Policy denied", 1412, Some(1)), r(151, "Stale or unroutable IP", 1024, Some(1))];
        assert_eq!(cilium_reason_of(&c), "ambiguous: Policy denied (133) at bpf_lxc.c:1412 egress | Stale or unroutable IP (151) at bpf_lxc.c:1024 egress");
        c.candidates.clear();
        assert_eq!(cilium_reason_of(&c), "no Cilium drop counter moved");
    }

    #[test]
    fn short_stack_keeps_six_function_names() {
        let frames: Vec<String> = (0..8).map(|i| format!("f{i}+0x{i}")).collect();
        assert_eq!(short_stack(&frames), "f0 < f1 < f2 < f3 < f4 < f5 < …");
        assert_eq!(short_stack(&frames[..2]), "f0 < f1");
        assert_eq!(short_stack(&["0xffffffffc0001234".to_string()]), "0xffffffffc0001234", "an address without a symbol stays whole");
    }

    fn udp() -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5, 53).write(&mut v, b"hi").unwrap();
        v
    }
}
