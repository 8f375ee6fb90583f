//! `tc-fixture`: loads the test tc programs (`fixtures-ebpf`) and attaches them to one hook of
//! one interface, the way Cilium attaches `cil_from_container`/`cil_to_container` to a pod's
//! lxc device, then serves a line protocol on stdin until EOF, SIGINT or SIGTERM:
//!   `deny ADDR` / `allow ADDR`  → `ok`       (edit `POLICY_DENY`, or `POLICY_DENY6` for IPv6)
//!   `stats` → `stats from_shot=N from_passed=N to_passed=N`
//! Once attached it writes `--ready-file` (JSON: the programs' names, ids and tags).
//! On exit it detaches its programs and, for `cls_bpf`, removes the clsact qdisc it added.
use std::{
    io::BufRead as _,
    net::IpAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
};
use clap::{Parser, ValueEnum};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fixtures-ebpf"));

static STOP: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Direction {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Attach {
    Tcx,
    #[value(name = "cls_bpf")]
    ClsBpf,
}

#[derive(Parser, Debug)]
#[command(about = "Attach the test tc programs (named like Cilium's) to an interface until stdin closes")]
struct Args {
    /// Interface to attach to.
    #[arg(long)]
    iface: String,
    /// Network namespace of the interface (e.g. /var/run/netns/NAME); default: ours.
    #[arg(long)]
    netns: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "ingress")]
    direction: Direction,
    #[arg(long, value_enum, default_value = "tcx")]
    attach: Attach,
    /// Program to attach (`cil_from_container`, `cil_to_container`); repeatable, run in this order.
    #[arg(long = "prog", required = true)]
    progs: Vec<String>,
    /// `cls_bpf` priority of the first program (the next ones get +1 each; lower runs first).
    #[arg(long, default_value_t = 1)]
    priority: u16,
    /// Destination to drop (IPv4 or IPv6); repeatable.
    #[arg(long)]
    deny: Vec<IpAddr>,
    /// Written (JSON) once every program is attached.
    #[arg(long)]
    ready_file: PathBuf,
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> std::process::ExitCode {
    match run(&Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tc-fixture: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    // Before any thread exists: the whole process moves to the interface's namespace, so the
    // ifindex lookup, the tcx link and the netlink requests all happen there.
    if let Some(ns) = &args.netns {
        integration_tests::netns::enter(ns)?;
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let attach_type = match args.direction {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    };
    let mut ebpf = Ebpf::load(OBJECT).context("loading the fixture object")?;
    let mut added_qdisc = false;
    let result = attach_and_serve(args, &mut ebpf, attach_type, &mut added_qdisc);
    // Detach (aya removes tcx links and cls_bpf filters when the programs drop).
    drop(ebpf);
    if added_qdisc {
        let out = std::process::Command::new("tc").args(["qdisc", "del", "dev", &args.iface, "clsact"]).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("tc-fixture: removing clsact from {}: {}", args.iface, String::from_utf8_lossy(&o.stderr).trim()),
            Err(e) => eprintln!("tc-fixture: removing clsact from {}: {e}", args.iface),
        }
    }
    result
}

fn attach_and_serve(args: &Args, ebpf: &mut Ebpf, attach_type: TcAttachType, added_qdisc: &mut bool) -> Result<()> {
    if args.attach == Attach::ClsBpf {
        match tc::qdisc_add_clsact(&args.iface) {
            Ok(()) => *added_qdisc = true,
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(anyhow!(e).context(format!("adding clsact to {}", args.iface))),
        }
    }
    let mut infos = Vec::new();
    for (i, name) in args.progs.iter().enumerate() {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name:?} in the fixture (cil_from_container, cil_to_container)"))?
            .try_into()?;
        prog.load().with_context(|| format!("loading {name}"))?;
        let options = match args.attach {
            Attach::Tcx => TcAttachOptions::TcxOrder(LinkOrder::last()),
            Attach::ClsBpf => TcAttachOptions::Netlink(NlOptions {
                priority: args.priority + u16::try_from(i)?,
                ..NlOptions::default()
            }),
        };
        prog.attach_with_options(&args.iface, attach_type, options)
            .with_context(|| format!("attaching {name} to {} {:?} with {:?}", args.iface, args.direction, args.attach))?;
        let info = prog.info()?;
        infos.push(serde_json::json!({"name": name, "id": info.id(), "tag": format!("{:016x}", info.tag())}));
    }
    for ip in &args.deny {
        set_deny(ebpf, *ip, true)?;
    }
    let ready = serde_json::json!({
        "iface": args.iface,
        "direction": format!("{:?}", args.direction).to_lowercase(),
        "attach": match args.attach { Attach::Tcx => "tcx", Attach::ClsBpf => "cls_bpf" },
        "programs": infos,
    });
    let tmp = args.ready_file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&ready)?)?;
    std::fs::rename(&tmp, &args.ready_file)?;
    serve(ebpf)
}

fn serve(ebpf: &mut Ebpf) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while !STOP.load(Ordering::Relaxed) {
        let line = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let reply = match command(ebpf, line.trim()) {
            Ok(r) => r,
            Err(e) => format!("error {e:#}"),
        };
        println!("{reply}");
    }
    Ok(())
}

fn command(ebpf: &mut Ebpf, line: &str) -> Result<String> {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("deny"), Some(ip)) => set_deny(ebpf, ip.parse()?, true).map(|()| "ok".into()),
        (Some("allow"), Some(ip)) => set_deny(ebpf, ip.parse()?, false).map(|()| "ok".into()),
        (Some("stats"), None) => {
            let stats: PerCpuArray<_, u64> = PerCpuArray::try_from(ebpf.map("FIXTURE_STATS").context("no FIXTURE_STATS")?)?;
            let sum = |i: u32| -> Result<u64> { Ok(stats.get(&i, 0)?.iter().sum()) };
            Ok(format!("stats from_shot={} from_passed={} to_passed={}", sum(0)?, sum(1)?, sum(2)?))
        }
        _ => bail!("unknown command {line:?}"),
    }
}

fn set_deny(ebpf: &mut Ebpf, ip: IpAddr, deny: bool) -> Result<()> {
    match ip {
        // The key is the address as the packet carries it (network order), read natively.
        IpAddr::V4(ip) => edit_policy(ebpf, "POLICY_DENY", u32::from_ne_bytes(ip.octets()), deny),
        IpAddr::V6(ip) => edit_policy(ebpf, "POLICY_DENY6", ip.octets(), deny),
    }
}

fn edit_policy<K: aya::Pod>(ebpf: &mut Ebpf, name: &str, key: K, deny: bool) -> Result<()> {
    let mut map: HashMap<_, K, u8> = HashMap::try_from(ebpf.map_mut(name).with_context(|| format!("no {name}"))?)?;
    if deny {
        map.insert(key, 1, 0)?;
    } else if let Err(e) = map.remove(&key)
        && !matches!(e, aya::maps::MapError::KeyNotFound)
    {
        return Err(e.into());
    }
    Ok(())
}
