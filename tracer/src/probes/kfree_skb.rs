//! The drop probe on `skb:kfree_skb`: `tp_btf` when the kernel accepts it, else `raw_tp`.
use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    programs::{BtfTracePoint, RawTracePoint, tp_btf::BtfTracePointLink, raw_trace_point::RawTracePointLink},
};
use tracer_common::names;

use super::TpKind;

const TRACEPOINT: &str = "kfree_skb";

/// The attached probe. Dropping it detaches; the program stays loaded (in `Ebpf`) so its
/// statistics can still be read.
pub struct DropProbe {
    pub backend: TpKind,
    link: Link,
}

/// Held only for its Drop (which detaches).
enum Link {
    Btf(#[expect(dead_code, reason = "held for Drop")] BtfTracePointLink),
    Raw(#[expect(dead_code, reason = "held for Drop")] RawTracePointLink),
}

impl DropProbe {
    pub fn program_name(&self) -> &'static str {
        match self.link {
            Link::Btf(_) => names::KFREE_SKB_BTF,
            Link::Raw(_) => names::KFREE_SKB_RAW,
        }
    }
}

pub fn attach(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<DropProbe> {
    let tp_btf_err = match try_tp_btf(ebpf, btf) {
        Ok(link) => return Ok(DropProbe { backend: TpKind::TpBtf, link: Link::Btf(link) }),
        Err(e) => e,
    };
    log::debug!("tp_btf kfree_skb unavailable ({tp_btf_err:#}); trying raw_tp");
    match try_raw_tp(ebpf) {
        Ok(link) => Ok(DropProbe { backend: TpKind::RawTp, link: Link::Raw(link) }),
        Err(raw_err) => Err(anyhow!(
            "cannot attach to the skb:kfree_skb tracepoint (tp_btf: {tp_btf_err:#}; raw_tp: {raw_err:#}); this kernel must allow BPF tracing programs (Linux ≥ 5.17 with BTF)"
        )),
    }
}

fn try_tp_btf(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<BtfTracePointLink> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(names::KFREE_SKB_BTF)
        .ok_or_else(|| anyhow!("no program {}", names::KFREE_SKB_BTF))?
        .try_into()?;
    p.load(TRACEPOINT, btf).map_err(super::brief)?;
    let id = p.attach().map_err(super::brief)?;
    Ok(p.take_link(id)?)
}

fn try_raw_tp(ebpf: &mut Ebpf) -> Result<RawTracePointLink> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(names::KFREE_SKB_RAW)
        .ok_or_else(|| anyhow!("no program {}", names::KFREE_SKB_RAW))?
        .try_into()?;
    p.load().map_err(super::brief)?;
    let id = p.attach(TRACEPOINT).map_err(super::brief)?;
    Ok(p.take_link(id)?)
}
