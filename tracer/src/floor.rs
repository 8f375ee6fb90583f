//! `tracer floor` (hidden; for `cargo xtask bench`): an empty program on each named tracepoint,
//! held until SIGINT or SIGTERM. It costs the node what any tracepoint-based observer pays
//! before its first instruction, the tracepoint's dispatch, and nothing more: the bench's
//! floor arms run it under the same load as the tracer, so a rate is judged against what the
//! machine allows at those hooks, not only against a node without them.
use std::{ffi::CString, os::fd::OwnedFd, path::PathBuf};

use anyhow::{Context as _, Result, anyhow};

use crate::kernel::bpf::{self, Insn, ProgSpec};

#[derive(clap::Args, Debug)]
pub struct FloorArgs {
    /// Tracepoints (raw tracepoint names, e.g. `kfree_skb`) to attach the empty program to.
    #[arg(long = "tracepoint", value_name = "NAME", value_delimiter = ',', required = true)]
    pub tracepoints: Vec<String>,
    /// Create FILE once every tracepoint is attached.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

pub fn run(args: &FloorArgs) -> Result<()> {
    // Blocked before anything is attached: a signal that comes early waits for `sigwait`, so
    // the ready file is removed whenever it comes (the links go with their fds either way).
    let signals = blocked(&[libc::SIGINT, libc::SIGTERM])?;
    let spec = ProgSpec { prog_type: bpf::PROG_RAW_TRACEPOINT, ..ProgSpec::default() };
    let prog = bpf::load(&spec, "tracer_floor", &Insn::returning(0), 4096).map_err(|e| anyhow!("cannot load the empty program: {} (verifier: {})", e.errno, e.verifier))?;
    let links = args
        .tracepoints
        .iter()
        .map(|tp| {
            let name = CString::new(tp.as_str()).with_context(|| format!("bad tracepoint name {tp:?}"))?;
            bpf::raw_tracepoint_open(&prog, Some(&name)).map_err(|e| anyhow!("cannot attach to the {tp} tracepoint: {}", bpf::errno_text(&e)))
        })
        .collect::<Result<Vec<OwnedFd>>>()?;
    if let Some(p) = &args.ready_file {
        std::fs::write(p, b"ready\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    let mut sig = 0;
    // SAFETY: `signals` is an initialised set, `sig` a live int.
    unsafe { libc::sigwait(&raw const signals, &raw mut sig) };
    drop(links);
    if let Some(p) = &args.ready_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Blocks `sigs` in this (single) thread and returns them as a set for `sigwait`.
fn blocked(sigs: &[i32]) -> Result<libc::sigset_t> {
    // SAFETY: an all-zero sigset_t is a valid value for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&raw mut set);
        for &s in sigs {
            libc::sigaddset(&raw mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) != 0 {
            return Err(anyhow!("cannot block SIGINT and SIGTERM"));
        }
    }
    Ok(set)
}
