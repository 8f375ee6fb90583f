//! Which BPF hooks this kernel really accepts, found by loading a two-instruction program of
//! each type and attaching it where attaching is the test — never from the version number.
//! `tracer doctor` shows the result; the capture picks its backends from it.
//!
//! Probing must not change the node: it runs on a throwaway thread that first moves into a
//! private network and mount namespace, so tcx and netfilter links go on that namespace's `lo`
//! and tracefs, when the host has none mounted, is mounted only there. Tracing attaches are
//! kernel-wide by nature, but the program is `return 0` and is detached at once: every link and
//! program is closed before the thread ends.
use std::{ffi::CString, fmt, os::fd::OwnedFd, path::Path};

use serde::Serialize;

use super::{
    bpf::{self, Insn, ProgSpec},
    btf::KernelBtf,
};

/// The drop tracepoint every backend is tried against.
const TP_CATEGORY: &str = "skb";
const TP_NAME: &str = "kfree_skb";
/// Functions a kprobe/fentry probe may target, newest kernels first (all free a dropped skb).
const FUNC_CANDIDATES: [&str; 3] = ["sk_skb_reason_drop", "kfree_skb_reason", "kfree_skb"];
const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";
const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// `lo` in a fresh network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
const NFPROTO_IPV4: u32 = 2;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_ACCEPT: i32 = 1;
/// `TCX_NEXT`: hand the packet on unchanged.
const TCX_NEXT: i32 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Tracepoint,
    TpBtf,
    RawTp,
    Kprobe,
    Fentry,
    Tcx,
    Netfilter,
}

impl Hook {
    pub const ALL: [Self; 7] = [Self::Tracepoint, Self::TpBtf, Self::RawTp, Self::Kprobe, Self::Fentry, Self::Tcx, Self::Netfilter];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Tracepoint => "tracepoint",
            Self::TpBtf => "tp_btf",
            Self::RawTp => "raw_tp",
            Self::Kprobe => "kprobe",
            Self::Fentry => "fentry",
            Self::Tcx => "tcx",
            Self::Netfilter => "netfilter",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Support {
    /// Loaded and attached.
    Yes,
    /// The kernel refused the load or the attach.
    No,
    /// Could not be tried (e.g. no private namespace to attach in).
    Untested,
}

#[derive(Debug, Clone, Serialize)]
pub struct HookSupport {
    pub hook: Hook,
    pub support: Support,
    /// What was tried and what the kernel answered.
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Features {
    pub hooks: Vec<HookSupport>,
}

impl Features {
    pub fn usable(&self, hook: Hook) -> bool {
        self.hooks.iter().any(|h| h.hook == hook && h.support == Support::Yes)
    }
}

/// Everything the probe thread needs, gathered before it leaves the host's namespaces.
#[derive(Clone)]
struct Inputs {
    tp_btf_id: Option<u32>,
    func: Option<(String, u32)>,
    kprobe_pmu: Result<u32, String>,
    kern_version: u32,
}

/// Probes every hook. `btf` is the running kernel's BTF when it has one (`tp_btf` and fentry
/// programs name their target by BTF id).
pub fn probe(btf: Option<&KernelBtf>) -> Features {
    let inputs = Inputs {
        tp_btf_id: btf.and_then(|b| b.typedef_id(&format!("btf_trace_{TP_NAME}"))),
        func: btf.and_then(|b| FUNC_CANDIDATES.iter().find_map(|f| b.func_id(f).map(|id| ((*f).to_string(), id)))),
        kprobe_pmu: std::fs::read_to_string(KPROBE_PMU_TYPE)
            .map_err(|_| format!("no kprobe PMU ({KPROBE_PMU_TYPE} is missing: kernel built without CONFIG_KPROBE_EVENTS)"))
            .and_then(|s| s.trim().parse::<u32>().map_err(|e| format!("bad {KPROBE_PMU_TYPE}: {e}"))),
        kern_version: kernel_version_code(),
    };
    let worker = inputs.clone();
    let hooks = std::thread::Builder::new()
        .name("feature-probe".into())
        .spawn(move || probe_in_sandbox(&worker))
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|_| "the probe thread panicked".to_string()));
    match hooks {
        Ok(hooks) => Features { hooks },
        Err(e) => Features {
            hooks: Hook::ALL.iter().map(|&hook| HookSupport { hook, support: Support::Untested, detail: e.clone() }).collect(),
        },
    }
}

/// Runs on its own thread: leaves the host's network (and, if it can, mount) namespace first.
fn probe_in_sandbox(inputs: &Inputs) -> Vec<HookSupport> {
    let sandbox = Sandbox::enter();
    Hook::ALL
        .iter()
        .map(|&hook| {
            let (support, detail) = match probe_one(hook, inputs, &sandbox) {
                Ok(detail) => (Support::Yes, detail),
                Err(Failure::No(d)) => (Support::No, d),
                Err(Failure::Untested(d)) => (Support::Untested, d),
            };
            HookSupport { hook, support, detail }
        })
        .collect()
}

enum Failure {
    No(String),
    Untested(String),
}

/// Loads `r0 = ret; exit` as the program `spec` describes.
fn load(spec: ProgSpec, ret: i32) -> Result<OwnedFd, Failure> {
    bpf::load(&spec, "tracer_probe", &Insn::returning(ret), 4096).map_err(|e| Failure::No(format!("load refused: {e}")))
}

fn attached<T>(r: std::io::Result<T>, what: &str) -> Result<String, Failure> {
    r.map(|_| what.to_string()).map_err(|e| Failure::No(format!("loaded, but attach refused: {}", bpf::errno_text(&e))))
}

fn probe_one(hook: Hook, inputs: &Inputs, sandbox: &Sandbox) -> Result<String, Failure> {
    let v = inputs.kern_version;
    match hook {
        Hook::Tracepoint => {
            let prog = load(ProgSpec { prog_type: bpf::PROG_TRACEPOINT, kern_version: v, ..ProgSpec::default() }, 0)?;
            let id = sandbox.tracepoint_id(TP_CATEGORY, TP_NAME).map_err(Failure::Untested)?;
            attached(bpf::attach_perf_tracepoint(&prog, id), "attached to skb:kfree_skb (perf event)")
        }
        Hook::TpBtf => {
            let id = inputs.tp_btf_id.ok_or_else(|| Failure::No(format!("no btf_trace_{TP_NAME} in kernel BTF")))?;
            let prog = load(ProgSpec {
                prog_type: bpf::PROG_TRACING,
                expected_attach_type: bpf::ATTACH_TRACE_RAW_TP,
                attach_btf_id: id,
                kern_version: v,
            }, 0)?;
            attached(bpf::raw_tracepoint_open(&prog, None), "attached to kfree_skb (BTF-typed)")
        }
        Hook::RawTp => {
            let prog = load(ProgSpec { prog_type: bpf::PROG_RAW_TRACEPOINT, kern_version: v, ..ProgSpec::default() }, 0)?;
            attached(bpf::raw_tracepoint_open(&prog, Some(c"kfree_skb")), "attached to kfree_skb")
        }
        Hook::Kprobe => {
            let (func, _) = inputs.func.clone().ok_or_else(|| Failure::Untested("no known skb-free function in BTF to probe".into()))?;
            let prog = load(ProgSpec { prog_type: bpf::PROG_KPROBE, kern_version: v, ..ProgSpec::default() }, 0)?;
            let pmu = inputs.kprobe_pmu.clone().map_err(|e| Failure::No(format!("loaded, but {e}")))?;
            let name = CString::new(func.clone()).map_err(|e| Failure::Untested(e.to_string()))?;
            attached(bpf::attach_perf_kprobe(&prog, pmu, &name), &format!("attached to {func}"))
        }
        Hook::Fentry => {
            let (func, id) = inputs.func.clone().ok_or_else(|| Failure::No("no known skb-free function in kernel BTF".into()))?;
            let prog = load(ProgSpec {
                prog_type: bpf::PROG_TRACING,
                expected_attach_type: bpf::ATTACH_TRACE_FENTRY,
                attach_btf_id: id,
                kern_version: v,
            }, 0)
            .map_err(|f| match f {
                Failure::No(d) => Failure::No(format!("{d} (target {func})")),
                other @ Failure::Untested(_) => other,
            })?;
            attached(bpf::raw_tracepoint_open(&prog, None), &format!("attached to {func}"))
        }
        Hook::Tcx => {
            sandbox.require_netns()?;
            let prog = load(ProgSpec { prog_type: bpf::PROG_SCHED_CLS, ..ProgSpec::default() }, TCX_NEXT)?;
            attached(bpf::link_tcx(&prog, LOOPBACK_IFINDEX, false, None), "link attached to lo ingress in a private netns")
        }
        Hook::Netfilter => {
            sandbox.require_netns()?;
            let prog = load(ProgSpec {
                prog_type: bpf::PROG_NETFILTER,
                expected_attach_type: bpf::ATTACH_NETFILTER,
                ..ProgSpec::default()
            }, NF_ACCEPT)?;
            attached(bpf::link_netfilter(&prog, NFPROTO_IPV4, NF_INET_LOCAL_IN, 1), "link attached to IPv4 LOCAL_IN in a private netns")
        }
    }
}

/// The probe thread's private namespaces.
struct Sandbox {
    netns: Result<(), String>,
    /// A private mount namespace (so mounting tracefs there is invisible to the host).
    mountns: bool,
}

impl Sandbox {
    fn enter() -> Self {
        // SAFETY: unshare affects only this thread (it owns its fs_struct after CLONE_NEWNS).
        if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } == 0 {
            // Without this a shared "/" would propagate our tracefs mount back to the host.
            // SAFETY: plain mount(2) with static, NUL-terminated strings.
            let private = unsafe { libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) } == 0;
            return Self { netns: Ok(()), mountns: private };
        }
        let both = std::io::Error::last_os_error();
        // SAFETY: as above, network namespace only.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
            return Self { netns: Ok(()), mountns: false };
        }
        Self { netns: Err(format!("cannot create a private network namespace to attach in: {}", bpf::errno_text(&both))), mountns: false }
    }

    fn require_netns(&self) -> Result<(), Failure> {
        self.netns.clone().map_err(Failure::Untested)
    }

    /// The tracepoint's id from tracefs, mounting tracefs in the private mount namespace when
    /// the host has none mounted.
    fn tracepoint_id(&self, category: &str, name: &str) -> Result<u64, String> {
        let read = |root: &str| -> Option<u64> {
            let p = Path::new(root).join("events").join(category).join(name).join("id");
            std::fs::read_to_string(p).ok()?.trim().parse().ok()
        };
        if let Some(id) = TRACEFS_CANDIDATES.iter().find_map(|r| read(r)) {
            return Ok(id);
        }
        if !self.mountns {
            return Err("loaded; attach not tested: tracefs is not mounted and there is no private mount namespace to mount it in".into());
        }
        let target = TRACEFS_CANDIDATES[0];
        let c_target = CString::new(target).map_err(|e| e.to_string())?;
        // SAFETY: mount(2) with NUL-terminated strings; the mount lives in this thread's private
        // mount namespace and disappears with it.
        if unsafe { libc::mount(c"nodev".as_ptr(), c_target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) } != 0 {
            return Err(format!("loaded; attach not tested: cannot mount tracefs: {}", bpf::errno_text(&std::io::Error::last_os_error())));
        }
        read(target).ok_or_else(|| format!("loaded; attach not tested: tracefs has no {category}:{name} tracepoint"))
    }
}

/// `LINUX_VERSION_CODE` of the running kernel; only kernels before 5.0 check it for kprobes.
fn kernel_version_code() -> u32 {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b, c) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a << 16) | (b.min(255) << 8) | c.min(255)
}
