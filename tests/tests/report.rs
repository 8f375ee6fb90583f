//! `tracer report` (issue 17) on real captures and bundles, rendered by a real headless Chromium
//! without network: the headline sentences, the SVG charts and the rule text are in the DOM
//! after scripts ran, the screenshot is not blank, and no request left the page. Inputs: a
//! single-node capture directory, a bundle whose ruleset and routes changed during the window
//! (removed Cilium-like feeder rule), two nodes, a capture without drops, a damaged archive, a
//! capture of drops by a Cilium-like datapath (Cilium's own reasons).
//! Needs root.
#[path = "report/browser.rs"]
mod browser;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use integration_tests::{Attach, CiliumFixture, CiliumLayout, CiliumOptions, Node, NodeOptions, TempDir, Tracer, cmd, skip, wait};

const WAIT: Duration = Duration::from_mins(5);

fn tracer_bin() -> PathBuf {
    Tracer::from_env().unwrap_or_else(|e| panic!("{e:#}")).bin
}

/// Runs `tracer report ARGS…`; (exit success, stderr).
fn report(args: &[&Path], out: &Path, md: Option<&Path>) -> (bool, String) {
    let mut c = Command::new(tracer_bin());
    c.arg("report").args(args).arg("-o").arg(out);
    if let Some(md) = md {
        c.arg("--markdown").arg(md);
    }
    let o = cmd::output(&mut c, None, WAIT).unwrap();
    (o.status.success(), o.stderr)
}

/// The page is one file with no URL of any kind and no reference that could load anything.
fn assert_self_contained(page: &str) {
    for bad in ["http:", "https:", "ftp:", "//", "url(", " src=", "@import", "<link", "<iframe"] {
        assert!(!page.contains(bad), "the page holds {bad:?}");
    }
    for (i, _) in page.match_indices("href=\"") {
        assert!(page[i + 6..].starts_with('#'), "a link that leaves the page: {}", &page[i..(i + 60).min(page.len())]);
    }
}

/// Renders in Chromium and checks what every page must show; returns the DOM. Skips (None)
/// without chromium.
fn render_checked(page: &Path, must: &[&str]) -> Option<String> {
    let Some(bin) = browser::chromium() else {
        skip("chromium is not installed (apt-get install chromium; `cargo xtask setup` installs it)");
        return None;
    };
    let html = std::fs::read_to_string(page).unwrap();
    assert_self_contained(&html);
    let r = browser::render(&bin, page);
    assert!(r.requests.is_empty(), "the page made requests: {:?}", r.requests);
    for m in must {
        assert!(r.dom.contains(m), "the DOM lacks {m:?}");
    }
    let (w, h, colours, ink) = browser::picture(&r.png);
    assert!(w >= 1000 && h >= 1000, "screenshot {w}x{h}");
    assert!(colours > 16 && ink > 0.005, "blank screenshot: {colours} colours, {:.1}% ink", ink * 100.0);
    if let Some(dir) = std::env::var_os("REPORT_SCREENSHOT_DIR") {
        let name = page.file_stem().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&r.png, Path::new(&dir).join(format!("{name}.png"))).unwrap();
    }
    Some(r.dom)
}

/// A capture run inside the node namespace (so its bundle snapshots that namespace's ruleset
/// and routes, as on a real node), stopped with SIGINT. The bundle's name is the node's
/// (`--node-name`: the report names a node as its capture recorded it).
struct NodeCapture {
    child: Child,
    dir: TempDir,
}

impl NodeCapture {
    fn start(node: &Node, name: &str, expression: &str) -> Self {
        let dir = TempDir::new("report-bundle").unwrap();
        let ready = dir.join("ready");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node.netns_path().display()))
            .arg("--")
            .arg(tracer_bin())
            .args(["capture", "--quiet", "--node-name", name, "--bundle"])
            .arg(dir.join(name))
            .arg("--ready-file")
            .arg(&ready)
            .arg(expression)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut c = Self { child, dir };
        wait::until("the tracer's ready file", integration_tests::tracer::READY_TIMEOUT, Duration::from_millis(20), || {
            if let Some(s) = c.child.try_wait()? {
                anyhow::bail!("the tracer exited before it was ready ({s})");
            }
            Ok(ready.exists().then_some(()))
        })
        .unwrap();
        c
    }

    fn bundle(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Waits until the tracer has written `n` drop events (it flushes every second).
    fn wait_events(&self, name: &str, n: usize) {
        let f = self.bundle(name).join("capture/drops.jsonl");
        wait::until(&format!("{n} drop events"), WAIT, Duration::from_millis(50), || {
            let lines = std::fs::read_to_string(&f).map_or(0, |t| t.lines().filter(|l| l.contains("\"type\":\"drop\"")).count());
            Ok((lines >= n).then_some(()))
        })
        .unwrap();
    }

    fn stop(mut self) -> TempDir {
        // SAFETY: our child, not yet reaped.
        unsafe { libc::kill(libc::pid_t::try_from(self.child.id()).unwrap(), libc::SIGINT) };
        let status = wait::until("the tracer to exit", WAIT, Duration::from_millis(20), || Ok(self.child.try_wait()?)).unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "tracer capture: {status}: {err}");
        self.dir
    }
}

/// A bundle on `node`: DROP rule in `CILIUM_FORWARD` fed by a `cilium-feeder` jump from
/// `FORWARD`; `first` datagrams to pod 1 die there; then the feeder rule and a route are removed
/// (as a `NetworkManager` restart did) and `second` datagrams reach pod 1's closed port
/// (`NO_SOCKET`).
fn feeder_bundle(node: &Node, name: &str, first: usize, second: usize) -> (TempDir, String) {
    let (a, b) = (node.pod(0), node.pod(1));
    node.exec("iptables", &["-w", "-N", "CILIUM_FORWARD"]).unwrap();
    node.exec("iptables", &["-w", "-A", "CILIUM_FORWARD", "-d", &format!("{}/32", b.ip), "-p", "udp", "-m", "udp", "--dport", "5353", "-j", "DROP"]).unwrap();
    let feeder = ["-m", "comment", "--comment", "cilium-feeder: CILIUM_FORWARD", "-j", "CILIUM_FORWARD"];
    node.exec("iptables", &[&["-w", "-A", "FORWARD"][..], &feeder[..]].concat()).unwrap();
    let route_dst = format!("{}/32", node.unused_ip());
    node.exec("ip", &["route", "add", &route_dst, "dev", "cilium_host"]).unwrap();
    let cap = NodeCapture::start(node, name, &format!("host {} and udp port 5353", b.ip));
    assert_eq!(a.send_udp(41000, b.addr(5353), first, b"query").unwrap(), first);
    cap.wait_events(name, first);
    node.exec("iptables", &[&["-w", "-D", "FORWARD"][..], &feeder[..]].concat()).unwrap();
    node.exec("ip", &["route", "del", &route_dst, "dev", "cilium_host"]).unwrap();
    assert_eq!(a.send_udp(41001, b.addr(5353), second, b"query").unwrap(), second);
    cap.wait_events(name, first + second);
    (cap.stop(), route_dst)
}

/// The request check is real: a page that loads an image and fetches is caught.
#[test]
fn net_log_sees_a_page_request() {
    let Some(bin) = browser::chromium() else {
        skip("chromium is not installed");
        return;
    };
    let dir = TempDir::new("report-netlog").unwrap();
    let page = dir.join("leaky.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><p>x</p><img src=\"http://10.255.0.1/a.png\"><script>fetch('https://example.invalid/b')</script></body></html>").unwrap();
    let r = browser::render(&bin, &page);
    assert!(r.requests.iter().any(|u| u.contains("10.255.0.1")) && r.requests.iter().any(|u| u.contains("example.invalid")), "{:?}", r.requests);
}

#[test]
fn single_node_capture_directory() {
    let mut node = Node::new(2).unwrap();
    let (a, b) = (node.pod(0).clone(), node.pod(1).clone());
    node.iptables("filter", "FORWARD", &["-d", &format!("{}/32", b.ip), "-p", "udp", "--dport", "9053", "-j", "DROP"]).unwrap();
    let run = Tracer::from_env().unwrap().capture().expression(format!("host {}", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(40000, b.addr(9053), 25, b"x").unwrap(), 25);
    let syn = a.tcp_connect(b.addr(6443), 3, Duration::from_secs(30)).unwrap();
    assert_eq!(syn.refused, 3, "each SYN answered by a RST");
    let done = run.stop_after(25 + 3).unwrap().ok().unwrap();
    let rule = done.events.iter().find_map(|e| e["netfilter"]["rule"].as_str()).expect("an attributed drop").to_string();
    let out = TempDir::new("report-out").unwrap();
    let (page, md) = (out.join("capture.html"), out.join("capture.md"));
    let (ok, err) = report(&[done.dir.path()], &page, Some(&md));
    assert!(ok, "{err}");
    let headline = format!("25 UDP packets from {} to {}:9053 were dropped by", a.ip, b.ip);
    let syns = format!("TCP SYNs from {} to {}:6443 found no socket", a.ip, b.ip);
    let Some(dom) = render_checked(&page, &[&headline, &syns, "<svg", "drop-table", "Run facts"]) else { return };
    assert!(dom.contains(&html_text(&rule)), "rule text {rule:?} not in the DOM");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains(&headline) && md.contains("## Who and where") && md.contains("## Run facts"), "{md}");
}

fn html_text(s: &str) -> String {
    // As Chromium serialises text: only &, < and > are escaped.
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[test]
fn bundle_with_ruleset_change() {
    let node = Node::new(2).unwrap();
    let (bundle_tmp, route) = feeder_bundle(&node, "incident-42", 20, 10);
    let dir = bundle_tmp.join("incident-42");
    let archive = bundle_tmp.join("incident-42.tar.zst");
    assert!(dir.join("report.html").is_file(), "capture --bundle writes report.html into the bundle");
    let out = TempDir::new("report-out").unwrap();
    let page = out.join("bundle.html");
    let (ok, err) = report(&[&archive], &page, None);
    assert!(ok, "{err}");
    let (b0, b1) = (node.pod(0).ip, node.pod(1).ip);
    let dropped = format!("20 UDP packets from {b0} to {b1}:5353 were dropped by");
    let no_socket = format!("10 UDP packets from {b0} to {b1}:5353 found no socket");
    let must = [dropped.as_str(), no_socket.as_str(), "The node state of incident-42 changed during the window", "cilium-feeder: CILIUM_FORWARD", "<svg", "removed"];
    let Some(dom) = render_checked(&page, &must) else { return };
    // `ip -j route` prints a host route without its /32.
    let route = route.trim_end_matches("/32");
    assert!(dom.contains(&format!("{route} dev cilium_host")), "the removed route is in the diff");
    let changes = &dom[dom.find("id=\"changes\"").unwrap()..];
    assert!(changes.contains("-A FORWARD -m comment --comment \"cilium-feeder: CILIUM_FORWARD\" -j CILIUM_FORWARD"), "the removed feeder rule is in the diff");
    assert!(dom.contains("-A CILIUM_FORWARD -d"), "the dropping rule");
}

#[test]
fn two_nodes() {
    let node_a = Node::new(2).unwrap();
    let node_b = Node::new(2).unwrap();
    let (ta, _) = feeder_bundle(&node_a, "node-a", 5, 2);
    let (tb, _) = feeder_bundle(&node_b, "node-b", 7, 3);
    let out = TempDir::new("report-out").unwrap();
    let (page, md) = (out.join("two-nodes.html"), out.join("two-nodes.md"));
    let (ok, err) = report(&[&ta.join("node-a"), &tb.join("node-b.tar.zst")], &page, Some(&md));
    assert!(ok, "{err}");
    let a = format!("5 UDP packets from {} to {}:5353 were dropped by", node_a.pod(0).ip, node_a.pod(1).ip);
    let b = format!("7 UDP packets from {} to {}:5353 were dropped by", node_b.pod(0).ip, node_b.pod(1).ip);
    let Some(dom) = render_checked(&page, &[&a, &b, "on node-a ", "on node-b ", "Node node-a: start vs end", "Node node-b: start vs end", "<svg"]) else { return };
    assert!(dom.contains("<th>node</th>"));
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("### node-a") && md.contains("### node-b"), "{md}");
}

#[test]
fn capture_without_drops() {
    let node = Node::new(1).unwrap();
    let run = Tracer::from_env().unwrap().capture().expression(format!("host {}", node.unused_ip())).start().unwrap();
    let done = run.stop().unwrap().ok().unwrap();
    assert_eq!(done.drops().unwrap(), 0);
    let out = TempDir::new("report-out").unwrap();
    let page = out.join("no-drops.html");
    let (ok, err) = report(&[done.dir.path()], &page, None);
    assert!(ok, "{err}");
    render_checked(&page, &["No drops: no packet matching the capture", "Run facts"]);
}

#[test]
fn damaged_archive_is_one_line_and_writes_nothing() {
    let node = Node::new(2).unwrap();
    let (t, _) = feeder_bundle(&node, "broken", 3, 1);
    let archive = t.join("broken.tar.zst");
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = TempDir::new("report-out").unwrap();
    let (page, md) = (out.join("r.html"), out.join("r.md"));
    let (ok, err) = report(&[&archive], &page, Some(&md));
    assert!(!ok, "a damaged archive must fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("tracer: error: ") && lines[0].contains("broken.tar.zst") && lines[0].contains("damaged"), "{err}");
    assert!(out.entries().unwrap().is_empty(), "nothing written: {:?}", out.entries());
}

/// Drops by a Cilium-like datapath (`cilium-fixture`, Cilium 1.16's layouts: a deny entry for
/// UDP 42001): the summary's `by_cilium_reason` is a section of the page and of the Markdown,
/// with Cilium's own reason, source line and code.
#[test]
fn cilium_reasons_section() {
    let node = Node::with_options(NodeOptions { prefix: "rc".into(), range: [10, 233], pods: 2, ..NodeOptions::default() }).unwrap();
    let (a, b) = (node.pod(0), node.pod(1));
    let fix = CiliumFixture::start(&CiliumOptions {
        bin: std::env::var_os("CILIUM_FIXTURE_BIN").map_or_else(|| env!("CARGO_BIN_EXE_cilium-fixture").into(), Into::into),
        netns: Some(node.netns_path()),
        iface: a.lxc.clone(),
        attach: Attach::tcx_or_cls_bpf(),
        layout: CiliumLayout::V1_16,
        endpoint: (1234, a.ip, 3000),
        ipcache: vec![(b.ip, 4000)],
        policy: vec![(true, 0, 17, 42_001)],
        also_unroutable_port: 0,
    })
    .unwrap();
    let run = Tracer::from_env().unwrap().capture().arg("--cilium-bpffs").arg(fix.bpffs()).expression(format!("host {} and udp port 42001", b.ip)).start().unwrap();
    assert_eq!(a.send_udp(42_000, b.addr(42_001), 12, b"cilium says no").unwrap(), 12);
    let done = run.stop_after(12).unwrap().ok().unwrap();
    fix.stop().unwrap();
    let reason = format!("Policy denied by denylist (181) at bpf_lxc.c:{} egress", integration_tests::cilium_fixture::LINE_POLICY_DENY);
    assert_eq!(done.summary().unwrap()["by_cilium_reason"][0]["reason"], reason.as_str());
    let out = TempDir::new("report-out").unwrap();
    let (page, md) = (out.join("cilium.html"), out.join("cilium.md"));
    let (ok, err) = report(&[done.dir.path()], &page, Some(&md));
    assert!(ok, "{err}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("Cilium drop reasons") && md.contains(&format!("| {reason} | 181 | 12 |")), "{md}");
    let Some(dom) = render_checked(&page, &["Cilium drop reasons", "Cilium reason"]) else { return };
    assert!(dom.contains(&format!("<td>{reason}</td><td>181</td><td>12</td>")), "the Cilium reason row is in the DOM");
}
