//! The container image (`cargo xtask image`, passed as `TRACER_IMAGE`) run under podman with
//! exactly the `DaemonSet`'s host namespaces, security context, volumes, environment and
//! resources, read from deploy/kubernetes/daemonset.yaml and translated field by field
//! (`integration_tests::podman`), on a testbed node with a planted iptables DROP: `/metrics`
//! counts the drops exactly (equal to the rule's own counter), the manifest's own trigger fires
//! and its dump names the rule and the node. The archive's Docker side (manifest.json) and OCI
//! side (index.json) are read by skopeo. Needs root and podman; skips (recorded) only where
//! podman cannot run at all. Every wait is on a count or a state, bounded.
use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use integration_tests::{
    Node, NodeOptions, TempDir, cmd, kube,
    podman::{NodeContext, Podman, run_args},
    skip, wait,
    watch::{Scrape, dump_files, http, parse, unpack},
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_mins(2);

/// The archive `cargo xtask test` built (`TRACER_IMAGE`), else `cargo xtask image`'s default.
fn archive() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_IMAGE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".oci.tar")).collect();
    match found.as_slice() {
        [one] => one.clone(),
        _ => panic!("TRACER_IMAGE is not set and {} holds no single *.oci.tar: run `cargo xtask image` (as root) first", dir.display()),
    }
}

/// One file of the archive.
fn member(archive: &Path, name: &str) -> Value {
    let text = cmd::run("tar", &[std::ffi::OsStr::new("-xOf"), archive.as_os_str(), name.as_ref()]).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `tracer:<version>` from Docker's manifest.json.
fn tag(archive: &Path) -> String {
    let m = member(archive, "manifest.json");
    m[0]["RepoTags"][0].as_str().expect("manifest.json has RepoTags").to_string()
}

fn podman() -> Option<Podman> {
    match Podman::new() {
        Ok(p) => Some(p),
        Err(e) => {
            skip(&format!("podman cannot run here: {e:#}"));
            None
        }
    }
}

/// The image loaded into podman's storage; removed on drop.
struct Loaded<'a> {
    podman: &'a Podman,
    name: String,
}

impl<'a> Loaded<'a> {
    fn new(podman: &'a Podman, archive: &Path) -> Self {
        let out = podman.run(&["load", "--input", &archive.display().to_string()]).unwrap();
        let name = out.lines().find_map(|l| l.strip_prefix("Loaded image: ")).unwrap_or_else(|| panic!("podman load named no image:\n{out}")).trim().to_string();
        Self { podman, name }
    }
}

impl Drop for Loaded<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rmi", "--force", &self.name]);
    }
}

/// A running container; removed (with its anonymous state) on drop.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Container<'_> {
    fn logs(&self) -> String {
        let mut c = self.podman.command();
        c.args(["logs", &self.name]);
        cmd::output(&mut c, None, TIMEOUT).map(|o| o.stdout + &o.stderr).unwrap_or_default()
    }

    fn state(&self) -> Value {
        let out = self.podman.run(&["inspect", "--format", "{{json .State}}", &self.name]).unwrap();
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "--force", "--time", "20", &self.name]);
    }
}

/// The archive as Docker (`manifest.json`, what `docker load` reads) and as an OCI layout
/// (`index.json`, what `podman load` and `ctr images import` read) name and label it; podman
/// loads it under the tag; the image's tree is root-owned with nothing setuid or setgid.
#[test]
fn archive_is_docker_and_oci_and_loads() {
    let archive = archive();
    let tag = tag(&archive);
    let version = tag.strip_prefix("tracer:").expect("tagged tracer:<version>");
    let index = member(&archive, "index.json");
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["org.opencontainers.image.ref.name"], version);
    assert_eq!(ann["io.containerd.image.name"], format!("docker.io/library/{tag}"));
    assert_eq!(member(&archive, "oci-layout")["imageLayoutVersion"], "1.0.0");
    let bin = integration_tests::Tracer::from_env().unwrap().bin;
    let bin_version = cmd::run(&bin.display().to_string(), &["--version"]).unwrap();
    assert_eq!(bin_version.trim(), format!("tracer {version}"), "the image's tag is the tracer's version");
    for transport in ["docker-archive", "oci-archive"] {
        let out = cmd::run("skopeo", &["inspect", "--config", &format!("{transport}:{}", archive.display())]).unwrap();
        let config: Value = serde_json::from_str(&out).unwrap();
        let labels = &config["config"]["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], version, "{transport}");
        assert!(labels["org.opencontainers.image.revision"].as_str().is_some_and(|r| r.len() >= 40), "{transport}: {labels}");
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/tracer"]));
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["watch"]));
    }
    let docker = cmd::run("skopeo", &["inspect", &format!("docker-archive:{}", archive.display())]).unwrap();
    assert!(docker.contains(&format!("\"{tag}\"")) || serde_json::from_str::<Value>(&docker).unwrap()["RepoTags"].as_array().is_some(), "{docker}");

    let Some(podman) = podman() else { return };
    let loaded = Loaded::new(&podman, &archive);
    assert!(loaded.name.ends_with(&tag), "{} is not {tag}", loaded.name);
    let out = podman.run(&["run", "--rm", &tag, "--version"]).unwrap();
    assert_eq!(out.trim(), format!("tracer {version}"));
    // The layout: root-owned, nothing setuid/setgid, nothing others may write but sticky dirs.
    let script = "find / -xdev \\( ! -user 0 -o ! -group 0 -o -perm /6000 -o \\( -perm -o+w ! -type l ! -perm -1000 \\) \\) -print; \
                  for t in iptables-nft-save ip6tables-nft-save iptables-legacy-save ip6tables-legacy-save nft ip tar; do command -v $t; done";
    let out = podman.run(&["run", "--rm", "--entrypoint", "/bin/sh", &tag, "-c", script]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    let tools: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("/usr/")).collect();
    assert_eq!(tools.len(), 7, "tools the tracer runs: {out}");
    assert_eq!(lines.len(), tools.len(), "files owned by others, setuid/setgid or world-writable:\n{out}");
}

/// A containerd of the test's own (root, state and socket in a temporary directory: the
/// node's containerd, if any, is not touched); killed on drop.
struct Containerd {
    child: std::process::Child,
    dir: TempDir,
}

impl Containerd {
    fn start() -> Self {
        let dir = TempDir::new("im-ctrd").unwrap();
        let child = std::process::Command::new("containerd")
            .arg("--root").arg(dir.join("root"))
            .arg("--state").arg(dir.join("state"))
            .arg("--address").arg(dir.join("sock"))
            .args(["--config", "/dev/null"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("containerd (cargo xtask setup installs it)");
        let sock = dir.join("sock");
        let mut me = Self { child, dir };
        wait::until("containerd's socket", TIMEOUT, Duration::from_millis(50), || {
            if let Some(status) = me.child.try_wait()? {
                anyhow::bail!("containerd exited ({status})");
            }
            Ok(sock.exists().then_some(()))
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", std::fs::read_to_string(me.dir.join("log")).unwrap_or_default()));
        me
    }

    /// `ctr` against this containerd, in the kubelet's namespace (`k8s.io`).
    fn ctr(&mut self, args: &[&str]) -> String {
        let sock = self.dir.join("sock");
        let mut all = vec!["--address", sock.to_str().unwrap(), "--namespace", "k8s.io"];
        all.extend(args);
        cmd::run("ctr", &all).unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The snapshotter's mounts go with the process; nothing is left under the temporary root.
        let _ = cmd::run("umount", &["--recursive", "--lazy", &self.dir.join("root").display().to_string()]);
    }
}

/// `ctr images import`, as a node's containerd would get the image: named as the kubelet
/// resolves `image: tracer:<version>` (docker.io/library/…), every blob present and unpacked.
#[test]
fn containerd_imports_it_under_the_kubelets_name() {
    let archive = archive();
    let tag = tag(&archive);
    let mut ctrd = Containerd::start();
    let out = ctrd.ctr(&["images", "import", &archive.display().to_string()]);
    let name = format!("docker.io/library/{tag}");
    assert!(out.contains(&name), "{out}");
    let check = ctrd.ctr(&["images", "check", &format!("name=={name}")]);
    let line = check.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{check}"));
    assert!(line.contains("complete") && line.trim_end().ends_with("true"), "not complete or not unpacked: {line}");
}

/// A free TCP port on the host (bound, then released for the container).
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port()
}

/// The `DaemonSet`'s container, from the manifest, against a planted iptables DROP.
#[test]
fn daemonset_container_counts_a_planted_drop_and_dumps_it() {
    let Some(podman) = podman() else { return };
    let archive = archive();
    let tag = tag(&archive);
    let _loaded = Loaded::new(&podman, &archive);

    let mut node = Node::with_options(NodeOptions { prefix: "im".into(), range: [10, 236], pods: 2, ..NodeOptions::default() }).unwrap();
    let (client, server) = (node.pod(0).clone(), node.pod(1).clone());
    let rule = node.iptables("filter", "FORWARD", &["-d", &server.ip.to_string(), "-p", "udp", "--dport", "7451", "-j", "DROP"]).unwrap();
    let comment = rule.comment.clone();

    let ds = kube::daemonset().unwrap();
    let pod = ds.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let container = &pod.containers[0];
    // The node's /var/lib/tracer (dumps) and CNI cache are the test's own directories.
    let state = TempDir::new("im-state").unwrap();
    let node_ctx = NodeContext {
        node_name: "image-test-node".into(),
        labels: BTreeMap::new(),
        host_paths: BTreeMap::from([("/var/lib/tracer".to_string(), state.join("tracer")), ("/var/lib/cni".to_string(), state.join("cni"))]),
    };
    let (run, mut args) = run_args(&pod, container, &node_ctx).unwrap();
    // The manifest's arguments, with a port of the test's own (the manifest's may be in use on
    // this host), the dump window shortened and the drops limited to this test's traffic.
    let port = free_port();
    let listen = args.iter_mut().find(|a| a.starts_with("--listen=")).expect("the DaemonSet gives --listen");
    let (addr, _) = listen.rsplit_once(':').unwrap();
    *listen = format!("{addr}:{port}");
    args.extend(["--after=1s".to_string(), format!("udp and dst port 7451 and host {}", server.ip)]);
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone()).unwrap();
    let (live, ready) = (probe(&container.liveness_probe), probe(&container.readiness_probe));

    let name = format!("tracer-image-test-{}", std::process::id());
    let mut cmdline = vec!["run".to_string(), "--detach".into(), format!("--name={name}")];
    cmdline.extend(run.iter().cloned());
    cmdline.push(tag.clone());
    cmdline.extend(args.iter().cloned());
    let refs: Vec<&str> = cmdline.iter().map(String::as_str).collect();
    podman.run(&refs).unwrap_or_else(|e| panic!("{e:#}\npodman {}", cmdline.join(" ")));
    let ctr = Container { podman: &podman, name };

    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    wait::until("the container's /readyz", TIMEOUT, Duration::from_millis(200), || {
        if http("GET", &url(&ready), &[]).is_ok_and(|a| a.status == 200) {
            return Ok(Some(()));
        }
        if ctr.state()["Running"] != true {
            anyhow::bail!("the container stopped: {}\n{}", ctr.state(), ctr.logs());
        }
        Ok(None)
    })
    .unwrap_or_else(|e| panic!("{e:#}\nlogs:\n{}\npodman {}", ctr.logs(), cmdline.join(" ")));
    assert_eq!(http("GET", &url(&live), &[]).unwrap().status, 200);
    let metrics = || -> Scrape {
        let a = http("GET", &url("/metrics"), &[]).unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        parse(&a.body, false).unwrap()
    };
    let first = metrics();
    let info: Vec<_> = first.samples("tracer_info", &[]).collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].labels["node"], "image-test-node", "NODE_NAME from the downward API");

    // The manifest's trigger (NETFILTER_DROP at >= 50/s for 5 s): send in rounds until it fires.
    let start = Instant::now();
    loop {
        client.send_udp(7450, server.addr(7451), 50, b"image").unwrap();
        if metrics().sum("tracer_dumps_total", &[]) >= 1 {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "the DaemonSet's trigger did not fire; logs:\n{}", ctr.logs());
    }
    // Traffic has stopped: the rule's series reaches the rule's own counter, and stays there.
    let counter = node.iptables_packets(&rule).unwrap();
    let scrape = wait::until("the rule's series to reach its counter", TIMEOUT, Duration::from_millis(200), || {
        let m = metrics();
        Ok((m.drops_where("rule", &comment) >= counter).then_some(m))
    })
    .unwrap_or_else(|e| panic!("{e:#}\nlogs:\n{}", ctr.logs()));
    assert_eq!(scrape.drops_where("rule", &comment), counter, "the rule's series is its counter");
    assert_eq!(scrape.sum("tracer_drops_total", &[]), counter, "every drop counted is the rule's");
    assert_eq!(scrape.sum("tracer_dump_failures_total", &[]), 0, "logs:\n{}", ctr.logs());

    // The dump, written by the container into the node's (here: the test's) dump directory.
    let dumps_dir = state.join("tracer/dumps");
    let files = dump_files(&dumps_dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let dump = unpack(&files[0]).unwrap();
    assert_eq!(dump.manifest["node"], "image-test-node");
    let of_rule: Vec<_> = dump.events.iter().filter(|e| e["netfilter"]["rule"].as_str().is_some_and(|r| r.contains(&comment))).collect();
    assert!(!of_rule.is_empty(), "the dump names no drop of {comment}; events: {:?}", dump.events.first());
    assert!(of_rule.iter().all(|e| e["reason"] == "NETFILTER_DROP" && e["netfilter"]["chain"] == "FORWARD"));

    // SIGTERM (podman stop): exit 0, every probe detached.
    podman.run(&["stop", "--time", "30", &ctr.name]).unwrap();
    let st = ctr.state();
    assert_eq!(st["ExitCode"], 0, "{st}\n{}", ctr.logs());
    drop(ctr);
    drop(node);
}

/// The capture Job's container, from capture-job.yaml, for a short window on a testbed node
/// with an iptables DROP: it exits 0 and leaves the bundle archive on the node's hostPath, with
/// the node's name and the rule's drops in it.
#[test]
fn capture_job_container_leaves_a_bundle() {
    let Some(podman) = podman() else { return };
    let archive = archive();
    let tag = tag(&archive);
    let _loaded = Loaded::new(&podman, &archive);
    let mut node = Node::with_options(NodeOptions { prefix: "ij".into(), range: [10, 237], pods: 2, ..NodeOptions::default() }).unwrap();
    let (client, server) = (node.pod(0).clone(), node.pod(1).clone());
    let rule = node.iptables("filter", "FORWARD", &["-d", &server.ip.to_string(), "-p", "udp", "--dport", "7461", "-j", "DROP"]).unwrap();

    let job = kube::capture_job().unwrap();
    let job_name = job.metadata.name.clone().unwrap();
    let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let state = TempDir::new("ij-state").unwrap();
    let node_ctx = NodeContext {
        node_name: "capture-test-node".into(),
        // The Job controller labels its pods with the Job's name.
        labels: BTreeMap::from([("job-name".to_string(), job_name.clone())]),
        host_paths: BTreeMap::from([("/var/lib/tracer/captures".to_string(), state.join("captures")), ("/var/lib/cni".to_string(), state.join("cni"))]),
    };
    let (run, mut args) = run_args(&pod, &pod.containers[0], &node_ctx).unwrap();
    // A window of the test's length instead of the template's ten minutes, a ready file on the
    // hostPath (the test sends once the probes are attached), and the test's traffic only.
    let duration = args.iter_mut().find(|a| a.starts_with("--duration=")).expect("the Job gives --duration");
    *duration = "--duration=8s".into();
    // The subcommand stays; the template's expression gives way to the test's.
    let subcommand = args.remove(0);
    assert_eq!(subcommand, "capture");
    args.retain(|a| a.starts_with("--"));
    args.insert(0, subcommand);
    args.push("--ready-file=/var/lib/tracer/captures/ready".into());
    args.push(format!("udp and dst port 7461 and host {}", server.ip));

    let name = format!("tracer-capture-test-{}", std::process::id());
    let mut cmdline = vec!["run".to_string(), "--detach".into(), format!("--name={name}")];
    cmdline.extend(run.iter().cloned());
    cmdline.push(tag);
    cmdline.extend(args.iter().cloned());
    let refs: Vec<&str> = cmdline.iter().map(String::as_str).collect();
    podman.run(&refs).unwrap_or_else(|e| panic!("{e:#}\npodman {}", cmdline.join(" ")));
    let ctr = Container { podman: &podman, name };
    let ready = state.join("captures/ready");
    wait::until("the capture's ready file", TIMEOUT, Duration::from_millis(100), || {
        if ready.exists() {
            return Ok(Some(()));
        }
        if ctr.state()["Running"] != true {
            anyhow::bail!("the container stopped early: {}\n{}", ctr.state(), ctr.logs());
        }
        Ok(None)
    })
    .unwrap_or_else(|e| panic!("{e:#}\nlogs:\n{}", ctr.logs()));
    client.send_udp(7460, server.addr(7461), 40, b"job").unwrap();
    let counter = node.iptables_packets(&rule).unwrap();
    assert_eq!(counter, 40);
    let st = wait::until("the capture to end", TIMEOUT, Duration::from_millis(200), || {
        let st = ctr.state();
        Ok((st["Running"] != true).then_some(st))
    })
    .unwrap();
    assert_eq!(st["ExitCode"], 0, "{st}\n{}", ctr.logs());
    let bundle = state.join("captures").join(format!("{job_name}.tar.zst"));
    assert!(bundle.is_file(), "no {}; captures: {:?}\nlogs:\n{}", bundle.display(), std::fs::read_dir(state.join("captures")).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()), ctr.logs());
    let dump = unpack(&bundle).unwrap();
    let of_rule = dump.events.iter().filter(|e| e["netfilter"]["rule"].as_str().is_some_and(|r| r.contains(&rule.comment))).count();
    assert_eq!(of_rule, 40, "every drop of the rule, named; logs:\n{}", ctr.logs());
    drop(ctr);
    drop(node);
}
