//! Report model and rendering from synthetic inputs laid out as the tool writes them (no root).
use std::path::{Path, PathBuf};

use super::{build, html, markdown, model::TABLE_ROWS};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tracer-report-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    fn put(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RULE: &str = "-A CILIUM_FORWARD -d 10.96.0.10/32 -p udp -m udp --dport 53 -j DROP";
const FEEDER: &str = "-A FORWARD -m comment --comment \"cilium-feeder: CILIUM_FORWARD\" -j CILIUM_FORWARD";

fn drop_line(sec: u32, sport: u16) -> String {
    format!(
        r#"{{"type":"drop","time":"2026-11-27T10:02:{sec:02}.5Z","reason":"NETFILTER_DROP","location":"nft_do_chain+0x46f","ifname":"lxc1","ifindex":7,"netns":4026531833,"proto":"udp","src":"10.0.1.5","dst":"10.96.0.10","sport":{sport},"dport":53,"src_pod":"default/web-0","netfilter":{{"family":"ip","table":"filter","chain":"CILIUM_FORWARD","hook":"forward","rule":"{RULE}","backend":"iptables-nft","attribution":"counters"}}}}"#
    )
}

fn syn_line(sec: u32) -> String {
    format!(r#"{{"type":"drop","time":"2026-11-27T10:02:{sec:02}.7Z","reason":"NO_SOCKET","location":"tcp_v4_rcv+0x99","ifname":"eth0","proto":"tcp","src":"10.0.1.5","dst":"10.0.0.1","sport":40000,"dport":6443,"tcp_flags":"S"}}"#)
}

fn capture(dir: &Dir, prefix: &str, drops: usize) {
    let mut lines: Vec<String> = (0..drops).map(|i| drop_line(u32::try_from(i % 50).unwrap(), 30000 + u16::try_from(i % 1000).unwrap())).collect();
    lines.push(syn_line(20));
    lines.push(r#"{"type":"packet","packet_id":1,"proto":"udp","src":"10.0.1.5","dst":"10.0.1.6","sport":1,"dport":2,"path":[{"t_ns":0,"hook":"net_dev_queue","ifname":"eth0","netns":1},{"t_ns":5000,"hook":"netif_receive_skb","ifname":"lxc1","netns":2}],"fate":"delivered to socket (netns 2)"}"#.into());
    lines.push(r#"{"type":"drop","time":"2026-11-27T10:02:59"#.into());
    dir.put(&format!("{prefix}drops.jsonl"), &(lines.join("\n") + "\n"));
    let summary = format!(
        r#"{{"drops":{},"lost_events":0,"events":{},"duration_s":60.0,"by_reason":[{{"reason":"NETFILTER_DROP","count":{drops}}},{{"reason":"NO_SOCKET","count":1}}],"by_cilium_reason":[{{"reason":"Policy denied (133) at bpf_lxc.c:1412 egress","code":133,"count":7}},{{"reason":"ambiguous: Policy denied (133) at bpf_lxc.c:1412 egress | Stale or unroutable IP (151) at bpf_lxc.c:1024 egress","count":2}}],"kernel":"6.18.0","probe":"tp_btf","expression":"net 10.0.0.0/8","start":"2026-11-27T10:02:00Z","end":"2026-11-27T10:03:00Z"}}"#,
        drops + 1,
        drops + 1
    );
    dir.put(&format!("{prefix}summary.json"), &summary);
}

fn bundle(dir: &Dir) {
    capture(dir, "capture/", 120);
    dir.put("MANIFEST.json", r#"{"tool_version":"0.1.0","command":"tracer capture --bundle b","start":"2026-11-27T10:02:00Z","end":"2026-11-27T10:03:00Z","files":[],"skipped":[]}"#);
    dir.put("versions.json", r#"{"tracer":"0.1.0","kernel_release":"6.18.0","os":"Debian GNU/Linux 12 (bookworm)","tools":{"nft":"nftables v1.0.6"}}"#);
    let ipt = |feeder: bool| format!("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [5:300]\n:CILIUM_FORWARD - [0:0]\n{}[120:5000] {RULE}\nCOMMIT\n", if feeder { format!("[9:99] {FEEDER}\n") } else { String::new() });
    dir.put("start/netfilter/iptables-nft-v4.txt", &ipt(true));
    dir.put("end/netfilter/iptables-nft-v4.txt", &ipt(false));
    dir.put("start/ip/root/route4.json", r#"[{"dst":"default","gateway":"10.0.0.254","dev":"eth0"},{"dst":"10.0.1.5","dev":"lxc1","scope":"link"}]"#);
    dir.put("end/ip/root/route4.json", r#"[{"dst":"default","gateway":"10.0.0.254","dev":"eth0"}]"#);
    dir.put("start/ip/root/link.json", r#"[{"ifname":"eth0","operstate":"UP"},{"ifname":"lxc1","operstate":"UP"}]"#);
    dir.put("end/ip/root/link.json", r#"[{"ifname":"eth0","operstate":"UP"},{"ifname":"lxc1","operstate":"DOWN"}]"#);
    dir.put("end/doctor.json", r#"{"findings":[{"id":"netfilter.cilium-chain-unhooked","severity":"critical","summary":"CILIUM_FORWARD is not jumped to from FORWARD","action":"restart the cilium agent"}]}"#);
}

fn no_urls(page: &str) {
    for bad in ["http:", "https:", "//", "url(", " src=", "@import"] {
        assert!(!page.contains(bad), "the page holds {bad:?}");
    }
}

#[test]
fn capture_directory_headline_tables_chart_and_table() {
    let d = Dir::new("cap");
    capture(&d, "", 300);
    let r = build(std::slice::from_ref(&d.0), None).unwrap();
    assert_eq!(r.nodes[0].events, 301);
    assert_eq!(r.nodes[0].unreadable, 1, "the cut last line");
    let page = html::render(&r);
    no_urls(&page);
    assert!(page.contains("300 UDP packets from default/web-0 to 10.96.0.10:53 were dropped by <code>"), "{}", &page[..3000.min(page.len())]);
    assert!(page.contains("(iptables-nft filter, FORWARD) between 10:02:00 and 10:02:49."));
    assert!(page.contains("1 TCP SYN from 10.0.1.5 to 10.0.0.1:6443 found no socket (in tcp_v4_rcv) at 10:02:20."));
    assert!(page.contains("<svg"), "chart");
    assert!(page.contains("drop-table"));
    assert!(page.contains("packet 1 udp 10.0.1.5:1 &gt; 10.0.1.6:2"));
    assert!(page.contains("Cilium drop reasons") && page.contains("<td>Policy denied (133) at bpf_lxc.c:1412 egress</td><td>133</td><td>7</td>"), "the summary's by_cilium_reason is a section");
    assert!(page.contains("ambiguous: Policy denied (133)"));
    let md = markdown::render(&r);
    assert!(md.contains("Cilium drop reasons") && md.contains("| Policy denied (133) at bpf_lxc.c:1412 egress | 133 | 7 |"), "{md}");
    assert!(md.contains("## Who and where") && md.contains("| tp_btf |") || md.contains("| drop probe | tp_btf |"), "{md}");
    assert!(!md.contains("<svg"));
}

#[test]
fn bundle_diff_shows_removed_feeder_rule_route_and_link() {
    let d = Dir::new("bundle");
    bundle(&d);
    let r = build(std::slice::from_ref(&d.0), Some("incident 42".into())).unwrap();
    let page = html::render(&r);
    no_urls(&page);
    let feeder = html_escape::encode_text(FEEDER).to_string();
    assert!(page.contains(&feeder), "removed feeder rule in the diff");
    assert!(page.contains("10.0.1.5 dev lxc1 scope link"), "removed route");
    assert!(page.contains("lxc1: UP → DOWN"), "link state");
    assert!(page.contains("CILIUM_FORWARD is not jumped to from FORWARD") && page.contains("restart the cilium agent"), "doctor");
    assert!(page.contains("The node state of"), "change headline");
    let md = markdown::render(&r);
    assert!(md.contains("| removed | rule | iptables-nft filter |"), "{md}");
}

#[test]
fn two_nodes_and_archive() {
    let (a, b) = (Dir::new("node-a"), Dir::new("node-b"));
    bundle(&a);
    capture(&b, "", 5);
    let out = Dir::new("arch");
    let archive = out.0.join("node-a.tar.zst");
    crate::bundle::archive::pack(&a.0, &archive).unwrap();
    let r = build(&[archive.clone(), b.0.clone()], None).unwrap();
    assert_eq!(r.nodes.len(), 2);
    assert_eq!(r.nodes[0].name, "node-a");
    assert_eq!(r.nodes[0].events, 121);
    let page = html::render(&r);
    assert!(page.contains("<th>node</th>"));
    assert!(page.contains(" on node-a between"));
    // A cut archive is refused as a whole.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = out.0.join("cut.tar.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = build(&[cut], None).err().expect("a cut archive must fail").to_string();
    assert!(e.contains("damaged or incomplete archive"), "{e}");
}

#[test]
fn no_drops_is_a_page() {
    let d = Dir::new("empty");
    d.put("drops.jsonl", "");
    d.put("summary.json", r#"{"drops":0,"lost_events":0,"events":0,"start":"2026-11-27T10:02:00Z","end":"2026-11-27T10:03:00Z"}"#);
    let r = build(std::slice::from_ref(&d.0), None).unwrap();
    let page = html::render(&r);
    assert!(page.contains("No drops: no packet matching"));
    no_urls(&page);
}

#[test]
fn table_is_capped_and_not_an_input_is_one_line() {
    let d = Dir::new("big");
    capture(&d, "", TABLE_ROWS + 500);
    let r = build(std::slice::from_ref(&d.0), None).unwrap();
    let page = html::render(&r);
    assert!(page.contains("The first 2,000 drop events"));
    let e = build(&[Path::new("/nonexistent-dir").to_path_buf()], None).err().unwrap().to_string();
    assert!(!e.contains('\n') && e.contains("/nonexistent-dir"), "{e}");
    let bad = Dir::new("bad");
    let e = build(std::slice::from_ref(&bad.0), None).err().unwrap().to_string();
    assert!(e.contains("holds neither drops.jsonl"), "{e}");
}
