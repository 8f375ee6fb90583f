//! `cilium-fixture`: a Cilium-like datapath on one pod's lxc, for the tracer's Cilium tests.
//! Mounts a private bpffs on `--bpffs DIR` (never the host's /sys/fs/bpf), pins under
//! `DIR/tc/globals` Cilium's maps in the byte layout of `--layout` (`1.14`: Cilium 1.14–1.15,
//! `1.16`, `1.17`, `1.18`, `1.19-dev`: the v1.19 development tree's policy map, `bad-metrics`:
//! a metrics map of no release), fills the endpoint map, the
//! ipcache and the endpoint's policy map, attaches `cil_from_container` (fixtures-ebpf
//! `cilium-ebpf`) to the interface's tc ingress, writes `--ready-file`, and holds until stdin
//! closes (the test dropped its handle, or died). On exit it detaches, unmounts the bpffs (the pins go with it)
//! and removes the clsact qdisc it added.
use std::{
    ffi::CString,
    io::Read as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, lpm_trie::Key},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use clap::{Parser, ValueEnum};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cilium-ebpf"));

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Layout {
    #[value(name = "1.14")]
    V1_14,
    #[value(name = "1.16")]
    V1_16,
    #[value(name = "1.17")]
    V1_17,
    #[value(name = "1.18")]
    V1_18,
    #[value(name = "1.19-dev")]
    V1_19Dev,
    #[value(name = "bad-metrics")]
    BadMetrics,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Attach {
    Tcx,
    #[value(name = "cls_bpf")]
    ClsBpf,
}

#[derive(Parser, Debug)]
#[command(about = "A Cilium-like datapath (pinned maps in a private bpffs, cil_from_container) until stdin closes")]
struct Args {
    /// An empty directory to mount the private bpffs on.
    #[arg(long)]
    bpffs: PathBuf,
    #[arg(long, value_enum)]
    layout: Layout,
    /// The pod's host-side interface (lxc…).
    #[arg(long)]
    iface: String,
    #[arg(long)]
    netns: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "tcx")]
    attach: Attach,
    /// The endpoint: ID,IP,IDENTITY (Cilium's endpoint id, the pod's IPv4, its identity).
    #[arg(long)]
    endpoint: String,
    /// An ipcache entry IP/PREFIX=IDENTITY; repeatable.
    #[arg(long)]
    ipcache: Vec<String>,
    /// A policy entry of the endpoint, egress: allow|deny:IDENTITY:PROTO:PORT (0 = any); repeatable.
    #[arg(long)]
    policy: Vec<String>,
    /// Drops to this destination port are also counted as "Stale or unroutable IP".
    #[arg(long, default_value_t = 0)]
    also_unroutable_port: u16,
    #[arg(long)]
    ready_file: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cilium-fixture: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn cstr(p: &Path) -> Result<CString> {
    Ok(CString::new(p.as_os_str().as_encoded_bytes())?)
}

fn run(args: &Args) -> Result<()> {
    if let Some(ns) = &args.netns {
        integration_tests::netns::enter(ns)?;
    }
    let dir = cstr(&args.bpffs)?;
    // SAFETY: NUL-terminated strings we own; a new bpffs instance private to this mount point.
    if unsafe { libc::mount(c"bpf".as_ptr(), dir.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) } != 0 {
        bail!("cannot mount a bpffs on {}: {}", args.bpffs.display(), std::io::Error::last_os_error());
    }
    let mut added_qdisc = false;
    let result = Ebpf::load(OBJECT).context("loading the cilium fixture object").and_then(|mut ebpf| {
        let r = setup_and_hold(args, &mut ebpf, &mut added_qdisc);
        drop(ebpf);
        r
    });
    if added_qdisc {
        let _ = std::process::Command::new("tc").args(["qdisc", "del", "dev", &args.iface, "clsact"]).output();
    }
    // SAFETY: as above; detaching drops every pin of this instance.
    if unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) } != 0 {
        eprintln!("cilium-fixture: cannot unmount {}: {}", args.bpffs.display(), std::io::Error::last_os_error());
    }
    result
}

fn parse_endpoint(s: &str) -> Result<(u16, Ipv4Addr, u32)> {
    let v: Vec<&str> = s.split(',').collect();
    let [id, ip, identity] = v.as_slice() else { bail!("--endpoint wants ID,IP,IDENTITY, not {s:?}") };
    Ok((id.parse()?, ip.parse()?, identity.parse()?))
}

fn setup_and_hold(args: &Args, ebpf: &mut Ebpf, added_qdisc: &mut bool) -> Result<()> {
    let globals = args.bpffs.join("tc/globals");
    std::fs::create_dir_all(&globals)?;
    let (endpoint_id, pod_ip, identity) = parse_endpoint(&args.endpoint)?;
    let ifname = CString::new(args.iface.as_str())?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {}", args.iface);
    }
    // Endpoint map: `struct endpoint_key` → `struct endpoint_info`.
    {
        let mut lxc: HashMap<_, [u8; 20], [u8; 48]> = HashMap::try_from(ebpf.map_mut("cilium_lxc").context("cilium_lxc")?)?;
        let mut k = [0u8; 20];
        k[..4].copy_from_slice(&pod_ip.octets());
        k[16] = 1;
        let mut v = [0u8; 48];
        v[..4].copy_from_slice(&ifindex.to_ne_bytes());
        v[6..8].copy_from_slice(&endpoint_id.to_ne_bytes());
        v[32..36].copy_from_slice(&identity.to_ne_bytes());
        lxc.insert(k, v, 0)?;
    }
    // ipcache: the pod itself, then what the test adds.
    let v18 = matches!(args.layout, Layout::V1_18 | Layout::V1_19Dev);
    {
        let mut entries = vec![(pod_ip, 32u32, identity)];
        for e in &args.ipcache {
            let (net, id) = e.split_once('=').with_context(|| format!("--ipcache wants IP/PREFIX=IDENTITY, not {e:?}"))?;
            let (ip, len) = net.split_once('/').unwrap_or((net, "32"));
            entries.push((ip.parse()?, len.parse()?, id.parse()?));
        }
        for (ip, len, id) in entries {
            let mut k = [0u8; 20];
            k[3] = 1;
            k[4..8].copy_from_slice(&ip.octets());
            let key = Key::new(32 + len, k);
            if v18 {
                let mut ipc: LpmTrie<_, [u8; 20], [u8; 24]> = LpmTrie::try_from(ebpf.map_mut("IPCACHE_V2").context("IPCACHE_V2")?)?;
                let mut v = [0u8; 24];
                v[..4].copy_from_slice(&u32::to_ne_bytes(id));
                ipc.insert(&key, v, 0)?;
            } else {
                let mut ipc: LpmTrie<_, [u8; 20], [u8; 12]> = LpmTrie::try_from(ebpf.map_mut("cilium_ipcache").context("cilium_ipcache")?)?;
                let mut v = [0u8; 12];
                v[..4].copy_from_slice(&u32::to_ne_bytes(id));
                ipc.insert(&key, v, 0)?;
            }
        }
    }
    let policy_name = match args.layout {
        Layout::V1_18 => "POLICY_V2",
        Layout::V1_19Dev => "POLICY_V2_19",
        _ => "POLICY_LPM",
    };
    fill_policy(args, ebpf, policy_name)?;
    {
        let mut config: Array<_, u32> = Array::try_from(ebpf.map_mut("CONFIG").context("CONFIG")?)?;
        config.set(
            0,
            match args.layout {
                Layout::V1_14 => 1,
                Layout::V1_18 => 3,
                Layout::V1_19Dev => 4,
                _ => 2,
            },
            0,
        )?;
        config.set(1, u32::from(args.also_unroutable_port), 0)?;
    }
    // Pin under Cilium's names, as the agent does.
    let metrics = if args.layout == Layout::BadMetrics { "METRICS_BAD" } else { "cilium_metrics" };
    let pins = [
        (metrics, "cilium_metrics".to_string()),
        ("cilium_lxc", "cilium_lxc".into()),
        if v18 { ("IPCACHE_V2", "cilium_ipcache_v2".into()) } else { ("cilium_ipcache", "cilium_ipcache".into()) },
        (policy_name, if matches!(args.layout, Layout::V1_14 | Layout::V1_16 | Layout::BadMetrics) { format!("cilium_policy_{endpoint_id:05}") } else { format!("cilium_policy_v2_{endpoint_id:05}") }),
    ];
    for (map, pin) in pins {
        ebpf.map(map).with_context(|| format!("no map {map}"))?.pin(globals.join(&pin)).with_context(|| format!("pinning {pin}"))?;
    }
    attach(args, ebpf, added_qdisc)?;
    std::fs::write(&args.ready_file, b"ready\n")?;
    hold();
    Ok(())
}

/// The endpoint's egress policy entries, in the map of `args.layout` (an LPM trie in every
/// release from 1.14; the value's size differs: 24 B up to 1.17, 8 B in 1.18, 12 B in the
/// v1.19 development tree; `deny` is bit 0 of byte 2 in all).
fn fill_policy(args: &Args, ebpf: &mut Ebpf, policy_name: &str) -> Result<()> {
    for p in &args.policy {
        let v: Vec<&str> = p.split(':').collect();
        let [verdict, identity, proto, port] = v.as_slice() else { bail!("--policy wants allow|deny:IDENTITY:PROTO:PORT, not {p:?}") };
        let (identity, proto, port): (u32, u8, u16) = (identity.parse()?, proto.parse()?, port.parse()?);
        let mut value = [0u8; 24];
        value[2] = u8::from(*verdict == "deny");
        let id = identity.to_ne_bytes();
        let pb = port.to_be_bytes();
        // Prefix: identity and direction always, then the protocol and the port when given.
        let l4 = match (proto, port) {
            (0, _) => 0,
            (_, 0) => 8,
            _ => 24,
        };
        let key = Key::new(40 + l4, [id[0], id[1], id[2], id[3], 1, proto, pb[0], pb[1]]);
        match args.layout {
            Layout::V1_18 => insert::<8>(ebpf, policy_name, &key, &value)?,
            Layout::V1_19Dev => insert::<12>(ebpf, policy_name, &key, &value)?,
            _ => insert::<24>(ebpf, policy_name, &key, &value)?,
        }
    }
    Ok(())
}

fn insert<const N: usize>(ebpf: &mut Ebpf, name: &str, key: &Key<[u8; 8]>, value: &[u8; 24]) -> Result<()> {
    let mut m: LpmTrie<_, [u8; 8], [u8; N]> = LpmTrie::try_from(ebpf.map_mut(name).context("policy map")?)?;
    let mut v = [0u8; N];
    v.copy_from_slice(&value[..N]);
    m.insert(key, v, 0)?;
    Ok(())
}

fn attach(args: &Args, ebpf: &mut Ebpf, added_qdisc: &mut bool) -> Result<()> {
    if args.attach == Attach::ClsBpf {
        match tc::qdisc_add_clsact(&args.iface) {
            Ok(()) => *added_qdisc = true,
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(anyhow!(e).context(format!("adding clsact to {}", args.iface))),
        }
    }
    let prog: &mut SchedClassifier = ebpf.program_mut("cil_from_container").context("no cil_from_container")?.try_into()?;
    prog.load().context("loading cil_from_container")?;
    let options = match args.attach {
        Attach::Tcx => TcAttachOptions::TcxOrder(LinkOrder::last()),
        Attach::ClsBpf => TcAttachOptions::Netlink(NlOptions { priority: 1, ..NlOptions::default() }),
    };
    prog.attach_with_options(&args.iface, TcAttachType::Ingress, options).with_context(|| format!("attaching cil_from_container to {}", args.iface))?;
    Ok(())
}

/// Until stdin closes (the test drops its handle, or dies).
fn hold() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while stdin.read(&mut sink).is_ok_and(|n| n > 0) {}
}
