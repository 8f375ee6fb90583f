//! What the running kernel lets a BPF program do, found by trying it: each probe loads a
//! do-nothing program of one kind (from `fixtures-ebpf`) and attaches it where the tracer would,
//! then lets it go. Tests that need a feature the kernel lacks call [`require`], which skips them
//! with the probe's own error ([`skip`]) — never a comparison of version numbers.
//!
//! `cargo xtask vm-test` runs the same probes inside each guest (the `kernel-probe` binary) and
//! puts their answers in its report.
use std::{io::Write as _, sync::OnceLock};

use aya::{
    Btf, Ebpf,
    programs::{
        BtfTracePoint, FEntry, KProbe, LinkOrder, ProgramType, RawTracePoint, SchedClassifier, TcAttachType, TracePoint,
        tc::TcAttachOptions,
    },
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fixtures-ebpf"));

/// Where the kprobe and fentry probes attach (`probe_fentry` names it too, at build time).
const FUNCTION: &str = "tcp_v4_rcv";

/// A kernel feature a test or the tracer relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// A kprobe on a kernel function (perf kprobe PMU or `kprobe_events`).
    Kprobe,
    /// fentry on a kernel function (BPF trampoline).
    Fentry,
    /// A BTF-typed tracepoint program on `kfree_skb` (what the tracer's drop probe prefers).
    TpBtf,
    /// A raw tracepoint program on `kfree_skb` (the drop probe's fallback).
    RawTp,
    /// A classic perf tracepoint program on `skb:kfree_skb`.
    Tracepoint,
    /// BPF netfilter programs (`BPF_PROG_TYPE_NETFILTER`, attached with netfilter links): the
    /// tracer's netfilter observers.
    NetfilterLink,
    /// tcx links (tc programs attached with `BPF_LINK_CREATE`, no qdisc).
    Tcx,
    /// The `sock:sk_data_ready` tracepoint (a raw tracepoint program attached to it): how
    /// `--path` knows a packet reached a socket.
    SkDataReady,
}

impl Feature {
    pub const ALL: [Self; 8] =
        [Self::Kprobe, Self::Fentry, Self::TpBtf, Self::RawTp, Self::Tracepoint, Self::NetfilterLink, Self::Tcx, Self::SkDataReady];

    /// Short name, as in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Kprobe => "kprobe",
            Self::Fentry => "fentry",
            Self::TpBtf => "tp_btf",
            Self::RawTp => "raw_tp",
            Self::Tracepoint => "tracepoint",
            Self::NetfilterLink => "netfilter_link",
            Self::Tcx => "tcx",
            Self::SkDataReady => "sk_data_ready",
        }
    }

    /// `Ok(what was attached)` or `Err(why the kernel refused)`; probed once per process.
    pub fn probe(self) -> Result<String, String> {
        static CACHE: [OnceLock<Result<String, String>>; Feature::ALL.len()] = [const { OnceLock::new() }; Feature::ALL.len()];
        CACHE[self as usize].get_or_init(|| if crate::is_root() { try_probe(self) } else { Err("not root".into()) }).clone()
    }
}

fn try_probe(f: Feature) -> Result<String, String> {
    match f {
        Feature::Kprobe => {
            let mut obj = load_object()?;
            let p: &mut KProbe = program(&mut obj, "probe_kprobe")?;
            p.load().map_err(chain)?;
            p.attach(FUNCTION, 0).map_err(chain)?;
            Ok(format!("kprobe attached to {FUNCTION}"))
        }
        Feature::Fentry => {
            let btf = Btf::from_sys_fs().map_err(chain)?;
            let mut obj = load_object()?;
            let p: &mut FEntry = program(&mut obj, "probe_fentry")?;
            p.load(FUNCTION, &btf).map_err(chain)?;
            p.attach().map_err(chain)?;
            Ok(format!("fentry attached to {FUNCTION}"))
        }
        Feature::TpBtf => {
            let btf = Btf::from_sys_fs().map_err(chain)?;
            let mut obj = load_object()?;
            let p: &mut BtfTracePoint = program(&mut obj, "probe_tp_btf")?;
            p.load("kfree_skb", &btf).map_err(chain)?;
            p.attach().map_err(chain)?;
            Ok("tp_btf attached to kfree_skb".into())
        }
        Feature::RawTp => {
            let mut obj = load_object()?;
            let p: &mut RawTracePoint = program(&mut obj, "probe_raw_tp")?;
            p.load().map_err(chain)?;
            p.attach("kfree_skb").map_err(chain)?;
            Ok("raw_tp attached to kfree_skb".into())
        }
        Feature::Tracepoint => {
            let mut obj = load_object()?;
            let p: &mut TracePoint = program(&mut obj, "probe_tracepoint")?;
            p.load().map_err(chain)?;
            p.attach("skb", "kfree_skb").map_err(chain)?;
            Ok("tracepoint attached to skb:kfree_skb".into())
        }
        // aya has no netfilter program type to attach; the kernel accepting the program type is
        // what the tracer's observers need (the link came with it, in the same release).
        Feature::NetfilterLink => match aya::sys::is_program_supported(ProgramType::Netfilter) {
            Ok(true) => Ok("BPF_PROG_TYPE_NETFILTER programs load".into()),
            Ok(false) => Err("the kernel refuses BPF_PROG_TYPE_NETFILTER programs (BPF netfilter links came in Linux 6.4)".into()),
            Err(e) => Err(chain(e)),
        },
        Feature::Tcx => probe_tcx(),
        // A raw tracepoint program takes any tracepoint: the kfree_skb one attaches here too.
        Feature::SkDataReady => {
            let mut obj = load_object()?;
            let p: &mut RawTracePoint = program(&mut obj, "probe_raw_tp")?;
            p.load().map_err(chain)?;
            p.attach("sk_data_ready").map_err(|e| format!("no sk_data_ready tracepoint: {}", chain(e)))?;
            Ok("raw_tp attached to sk_data_ready".into())
        }
    }
}

/// Attaches `cil_to_container` with a tcx link to `lo` of a fresh network namespace, owned
/// by a short-lived thread: nothing outside that namespace ever sees the program.
fn probe_tcx() -> Result<String, String> {
    std::thread::spawn(|| {
        // SAFETY: unshare affects only this thread, which ends right after the probe.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
        }
        let mut obj = load_object()?;
        let p: &mut SchedClassifier = program(&mut obj, "cil_to_container")?;
        p.load().map_err(chain)?;
        p.attach_with_options("lo", TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(|e| format!("tcx attach refused: {}", chain(e)))?;
        Ok("tcx link on lo (ingress) in a scratch namespace".into())
    })
    .join()
    .map_err(|_| "the tcx probe thread panicked".to_string())?
}

fn load_object() -> Result<Ebpf, String> {
    Ebpf::load(OBJECT).map_err(chain)
}

fn program<'a, P>(obj: &'a mut Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    obj.program_mut(name).ok_or_else(|| format!("no program {name} in the fixture object"))?.try_into().map_err(chain)
}

/// An error with its sources, on one line.
fn chain(e: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::from(e))
}

/// True when `feature` works on this kernel; otherwise marks the running test skipped with the
/// probe's reason. Use as `if !kernel::require(Feature::Tcx) { return; }`.
#[must_use]
pub fn require(feature: Feature) -> bool {
    match feature.probe() {
        Ok(_) => true,
        Err(why) => {
            skip(&format!("needs {}: {why}", feature.name()));
            false
        }
    }
}

/// Records that one expectation of the running test was not checked because the kernel lacks
/// `feature` (the rest of the test still runs and must pass): printed, and appended to
/// `$TESTBED_SKIP_LOG` as `{"type":"unchecked",…}` so runners show the test as partly checked.
pub fn unchecked(what: &str, feature: Feature) {
    let why = feature.probe().err().unwrap_or_else(|| "available".into());
    log_line("unchecked", &format!("{what} (needs {}: {why})", feature.name()));
}

/// Marks the running test as skipped: prints why on stderr and, when `TESTBED_SKIP_LOG` names a
/// file, appends `{"type":"skip","name":TEST,"reason":…}` to it, so the runner (`cargo xtask
/// test`, `vm-test`) reports the test as skipped rather than passed. The test then returns.
pub fn skip(reason: &str) {
    log_line("skip", reason);
}

fn log_line(kind: &str, reason: &str) {
    // libtest runs each test on a thread named after it.
    let name = std::thread::current().name().unwrap_or("unknown test").to_string();
    eprintln!("{} {name}: {reason}", kind.to_uppercase());
    if let Some(path) = std::env::var_os("TESTBED_SKIP_LOG") {
        let line = serde_json::json!({"type": kind, "name": name, "reason": reason}).to_string() + "\n";
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            // A skip nobody can see would be a silent pass: fail loudly instead.
            panic!("cannot record the {kind} of {name} in {}: {e}", path.to_string_lossy());
        }
    }
}

/// `(pf, hook, priority)` of every netfilter link of ours (`tracer_nf_obs`), from the kernel
/// (`BPF_LINK_GET_NEXT_ID`, then each link's and program's info: Debian's bpftool predates
/// netfilter links and prints their type as a number only).
pub fn observer_links() -> Vec<(u32, u32, i32)> {
    fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> i64 {
        // SAFETY: `attr` is a zero-padded `union bpf_attr` of its length.
        unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
    }
    fn fd_by_id(cmd: libc::c_long, id: u32) -> Option<std::os::fd::OwnedFd> {
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        let fd = i32::try_from(bpf(cmd, &mut attr)).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: a new fd the kernel just gave us.
        Some(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    }
    fn info(fd: &std::os::fd::OwnedFd, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&std::os::fd::AsRawFd::as_raw_fd(fd).to_ne_bytes());
        attr[4..8].copy_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
        attr[8..16].copy_from_slice(&(buf.as_mut_ptr() as u64).to_ne_bytes());
        assert_eq!(bpf(15, &mut attr), 0, "BPF_OBJ_GET_INFO_BY_FD: {}", std::io::Error::last_os_error());
        buf
    }
    let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    let (mut out, mut id) = (Vec::new(), 0u32);
    for _ in 0..100_000 {
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(31, &mut attr) != 0 {
            break; // ENOENT: no link after `id`
        }
        id = u32_at(&attr, 4);
        let Some(link) = fd_by_id(30, id) else { continue };
        // `struct bpf_link_info`: type, id, prog_id, then the union (8-aligned) whose
        // netfilter member is pf, hooknum, priority, flags.
        let l = info(&link, 64);
        if u32_at(&l, 0) != 10 {
            continue; // BPF_LINK_TYPE_NETFILTER
        }
        let Some(prog) = fd_by_id(13, u32_at(&l, 8)) else { continue };
        // `struct bpf_prog_info.name` at 64.
        let p = info(&prog, 96);
        if p[64..80].split(|b| *b == 0).next() == Some(&b"tracer_nf_obs"[..]) {
            out.push((u32_at(&l, 16), u32_at(&l, 20), u32_at(&l, 24).cast_signed()));
        }
    }
    out
}

/// `bpftool -j WHAT show` (prog, map, link) as JSON values: the kernel's own list of what is
/// loaded and attached.
pub fn bpftool(what: &str) -> Vec<serde_json::Value> {
    let out = std::process::Command::new("bpftool").args(["-j", what, "show"]).output().unwrap();
    assert!(out.status.success(), "bpftool {what}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}
