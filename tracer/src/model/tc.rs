//! The `tc` section of a drop event: which BPF program on which hook shot the packet.
use serde::Serialize;

/// The `tc` object of a drop event (contract fields first; the rest only when known).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TcInfo {
    pub ifname: String,
    /// "ingress" or "egress".
    pub direction: &'static str,
    /// "tcx" or "`cls_bpf`"; null when no program could be singled out.
    pub attach: Option<&'static str>,
    pub prog: Option<String>,
    pub prog_id: Option<u32>,
    pub prog_tag: Option<String>,
    pub verdict: &'static str,
    /// `cls_bpf` priority and handle of the filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prio: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u32>,
    /// How the program was singled out: "observer" (per packet: it ran right after the last
    /// observer the packet passed), "`only_program`" (the only program on the hook), "ambiguous"
    /// (see `candidates`), "unknown".
    pub attribution: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl TcInfo {
    /// "BPF program `cil_from_container`" / "a tc program".
    pub fn who(&self) -> String {
        match &self.prog {
            Some(p) => format!("BPF program {p}"),
            None if self.candidates.is_empty() => "a tc program".into(),
            None => format!("one of {}", self.candidates.join(", ")),
        }
    }
}
