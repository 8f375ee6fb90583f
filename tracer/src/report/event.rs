//! One line of a capture's JSON Lines, as the report reads it (the README's output contract).
//! Every field is optional: the report shows what the file says and never fills in the rest.
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default, Deserialize)]
pub struct Event {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub time: Option<String>,
    /// Set by a multi-node (`merge`) output; else the input names the node.
    pub node: Option<String>,
    pub reason: Option<String>,
    pub location: Option<String>,
    pub ifname: Option<String>,
    pub netns: Option<u64>,
    pub proto: Option<Value>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<String>,
    pub icmp_type: Option<u8>,
    pub ethertype: Option<String>,
    pub netfilter: Option<Netfilter>,
    pub tc: Option<Tc>,
    pub src_pod: Option<String>,
    pub dst_pod: Option<String>,
    pub pod_iface: Option<String>,
    pub packet_id: Option<u64>,
    pub path: Option<Vec<Hop>>,
    pub fate: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Netfilter {
    pub backend: Option<String>,
    pub family: Option<String>,
    pub table: Option<String>,
    pub chain: Option<String>,
    pub hook: Option<String>,
    pub rule: Option<String>,
    pub attribution: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tc {
    pub ifname: Option<String>,
    pub direction: Option<String>,
    pub attach: Option<String>,
    pub prog: Option<String>,
    pub attribution: Option<String>,
}

#[derive(Debug, Default, Deserialize, Clone)]
pub struct Hop {
    pub t_ns: Option<u64>,
    pub hook: Option<String>,
    pub ifname: Option<String>,
    pub netns: Option<u64>,
}

impl Event {
    pub fn proto(&self) -> Option<String> {
        match &self.proto {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => self.ethertype.clone(),
        }
    }

    /// `addr:port` (or the bare address).
    pub fn endpoint(addr: Option<&str>, port: Option<u16>) -> Option<String> {
        let a = addr?;
        Some(match port {
            Some(p) if a.contains(':') => format!("[{a}]:{p}"),
            Some(p) => format!("{a}:{p}"),
            None => a.to_string(),
        })
    }

    /// What dropped it, as the page names it: the rule, the BPF program, or the kernel function.
    pub fn culprit(&self) -> Culprit {
        if let Some(nf) = self.netfilter.as_ref().filter(|n| n.rule.is_some() || n.chain.is_some()) {
            return Culprit::Rule(nf.clone());
        }
        if let Some(tc) = self.tc.as_ref().filter(|t| t.prog.is_some()) {
            return Culprit::Program(tc.clone());
        }
        Culprit::Location(self.location.as_deref().map(function).unwrap_or_default().to_string())
    }
}

/// `nft_do_chain+0x46f` → `nft_do_chain` (clone suffixes kept: they name the real symbol).
pub fn function(location: &str) -> &str {
    location.split('+').next().unwrap_or(location)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Culprit {
    Rule(Netfilter),
    Program(Tc),
    Location(String),
}

impl Culprit {
    /// The short text the tables and sentences use.
    pub fn text(&self) -> String {
        match self {
            Self::Rule(nf) => nf.rule.clone().or_else(|| nf.chain.as_ref().map(|c| format!("chain {c}"))).unwrap_or_default(),
            Self::Program(tc) => tc.prog.clone().unwrap_or_default(),
            Self::Location(l) => l.clone(),
        }
    }

    /// Where it sits: `iptables-nft filter, FORWARD`, `lxc… ingress [tcx]`.
    pub fn context(&self) -> String {
        match self {
            Self::Rule(nf) => {
                let head: Vec<&str> = [nf.backend.as_deref(), nf.table.as_deref()].into_iter().flatten().collect();
                let chain = nf.hook.as_deref().map(str::to_uppercase).or_else(|| nf.chain.clone());
                let mut s = head.join(" ");
                if let Some(c) = chain {
                    if !s.is_empty() {
                        s.push_str(", ");
                    }
                    s.push_str(&c);
                }
                s
            }
            Self::Program(tc) => {
                let mut s = [tc.ifname.as_deref(), tc.direction.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" ");
                if let Some(a) = &tc.attach {
                    s.push_str(" [");
                    s.push_str(a);
                    s.push(']');
                }
                s
            }
            Self::Location(_) => String::new(),
        }
    }
}
