//! The drop probe on `skb:kfree_skb`: tp_btf when the kernel accepts it, else raw_tp.
use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    programs::{BtfTracePoint, RawTracePoint},
};
use tracer_common::names;

use super::Backend;


const TRACEPOINT: &str = "kfree_skb";

/// Attaches the drop probe; the link lives as long as `ebpf`.
pub fn attach(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<Backend> {
    let tp_btf_err = match try_tp_btf(ebpf, btf) {
        Ok(()) => return Ok(Backend::TpBtf),
        Err(e) => e,
    };
    log::debug!("tp_btf kfree_skb unavailable ({tp_btf_err:#}); trying raw_tp");
    try_raw_tp(ebpf).map(|()| Backend::RawTp).map_err(|raw_err| {
        anyhow!(
            "cannot attach to the skb:kfree_skb tracepoint (tp_btf: {tp_btf_err:#}; raw_tp: {raw_err:#}); this kernel must allow BPF tracing programs (Linux ≥ 5.17 with BTF)"
        )
    })
}

fn try_tp_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<()> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(names::KFREE_SKB_BTF)
        .ok_or_else(|| anyhow!("no program {}", names::KFREE_SKB_BTF))?
        .try_into()?;
    p.load(TRACEPOINT, btf).map_err(super::brief)?;
    p.attach().map_err(super::brief)?;
    Ok(())
}

fn try_raw_tp(ebpf: &mut Ebpf) -> Result<()> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(names::KFREE_SKB_RAW)
        .ok_or_else(|| anyhow!("no program {}", names::KFREE_SKB_RAW))?
        .try_into()?;
    p.load().map_err(super::brief)?;
    p.attach(TRACEPOINT).map_err(super::brief)?;
    Ok(())
}
