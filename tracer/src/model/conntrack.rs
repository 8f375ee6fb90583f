//! A drop's conntrack facts (`ct` and `mark` in the JSON): the wire record's numbers named with
//! the running kernel's own enums (`enum ip_conntrack_info`, `enum ip_conntrack_status` from
//! BTF), never with a table of ours.
use serde::{Serialize, Serializer};
use tracer_common::{PacketEvent, ct_flags};

/// The conntrack entry of a dropped packet, as `-m conntrack` would see it at the drop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ct {
    /// `NEW`, `ESTABLISHED`, `RELATED`, `UNTRACKED`, or `INVALID` (no entry attached: conntrack
    /// found the packet invalid, or had not run for it when netfilter dropped it).
    pub state: &'static str,
    /// `original` or `reply`: the direction of the packet in its connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_opt")]
    pub mark: Option<u32>,
    /// The entry's `IPS_*` status bits by their kernel names without `IPS_`/`_BIT`
    /// (`CONFIRMED`, `SEEN_REPLY`, `DST_NAT`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<String>>,
}

/// `0x…` as marks are written in rules.
pub fn hex_opt<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&format!("{v:#x}")),
        None => s.serialize_none(),
    }
}

/// The kernel's names for `ip_conntrack_info` values and `IPS_*_BIT` status bits.
#[derive(Debug, Clone, Default)]
pub struct CtNames {
    /// By `ip_conntrack_info` value (0–7): state and direction.
    info: [Option<(&'static str, &'static str)>; 8],
    /// By bit number.
    status: Vec<(u32, String)>,
}

impl CtNames {
    /// From the enumerators of `enum ip_conntrack_info` and `enum ip_conntrack_status` (either
    /// may be empty when this kernel's BTF lacks it: then states, or status names, are not told).
    pub fn from_enums(info: &[(String, u64)], status: &[(String, u64)]) -> Self {
        let mut names = Self::default();
        for (name, value) in info {
            let state = match name.as_str() {
                "IP_CT_ESTABLISHED" => ("ESTABLISHED", "original"),
                "IP_CT_RELATED" => ("RELATED", "original"),
                "IP_CT_NEW" => ("NEW", "original"),
                "IP_CT_ESTABLISHED_REPLY" => ("ESTABLISHED", "reply"),
                "IP_CT_RELATED_REPLY" => ("RELATED", "reply"),
                "IP_CT_UNTRACKED" => ("UNTRACKED", ""),
                // IP_CT_IS_REPLY and IP_CT_NUMBER are bounds, not states.
                _ => continue,
            };
            if let Some(slot) = usize::try_from(*value).ok().and_then(|v| names.info.get_mut(v)) {
                *slot = Some(state);
            }
        }
        names.status = status
            .iter()
            .filter_map(|(name, bit)| Some((u32::try_from(*bit).ok().filter(|b| *b < 32)?, name.strip_prefix("IPS_")?.strip_suffix("_BIT")?.to_string())))
            .collect();
        names
    }

    /// Whether this kernel named any state (else no `ct` is reported).
    pub fn known(&self) -> bool {
        self.info.iter().any(Option::is_some)
    }

    /// The facts of a drop event; `netfilter_drop`: a packet without an entry reads as
    /// `INVALID` (what a conntrack match there saw) rather than having no `ct` at all.
    pub fn of(&self, h: &PacketEvent, netfilter_drop: bool) -> Option<Ct> {
        if !self.known() {
            return None;
        }
        if h.ct_flags & ct_flags::NFCT == 0 {
            return netfilter_drop.then_some(Ct { state: "INVALID", direction: None, zone: None, mark: None, status: None });
        }
        let (state, direction) = self.info.get(usize::from(h.ct_info & 7)).copied().flatten()?;
        let status = (h.ct_flags & ct_flags::STATUS != 0 && !self.status.is_empty())
            .then(|| self.status.iter().filter(|(bit, _)| h.ct_status & (1 << bit) != 0).map(|(_, n)| n.clone()).collect());
        Some(Ct {
            state,
            direction: (!direction.is_empty()).then_some(direction),
            zone: (h.ct_flags & ct_flags::ZONE != 0).then_some(h.ct_zone),
            mark: (h.ct_flags & ct_flags::CT_MARK != 0).then_some(h.ct_mark),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CtNames {
        let info: Vec<(String, u64)> = [("IP_CT_ESTABLISHED", 0), ("IP_CT_RELATED", 1), ("IP_CT_NEW", 2), ("IP_CT_IS_REPLY", 3), ("IP_CT_ESTABLISHED_REPLY", 3), ("IP_CT_RELATED_REPLY", 4), ("IP_CT_NUMBER", 5), ("IP_CT_UNTRACKED", 7)]
            .iter()
            .map(|(n, v)| ((*n).to_string(), *v))
            .collect();
        let status: Vec<(String, u64)> = [("IPS_EXPECTED_BIT", 0), ("IPS_SEEN_REPLY_BIT", 1), ("IPS_CONFIRMED_BIT", 3), ("IPS_DST_NAT_BIT", 5), ("IPS_DST_NAT_DONE_BIT", 8)]
            .iter()
            .map(|(n, v)| ((*n).to_string(), *v))
            .collect();
        CtNames::from_enums(&info, &status)
    }

    fn event(flags: u8, info: u8, status: u32) -> PacketEvent {
        // SAFETY: PacketEvent is plain integers; all-zero is a valid value.
        let mut h: PacketEvent = unsafe { std::mem::zeroed() };
        (h.ct_flags, h.ct_info, h.ct_status, h.ct_mark, h.ct_zone) = (flags, info, status, 0x200, 3);
        h
    }

    #[test]
    fn states_and_status_from_the_kernel_names() {
        let n = names();
        let all = ct_flags::NFCT | ct_flags::STATUS | ct_flags::CT_MARK | ct_flags::ZONE;
        let ct = n.of(&event(all, 3, 0b1_0010_1010), false).unwrap();
        assert_eq!((ct.state, ct.direction, ct.zone, ct.mark), ("ESTABLISHED", Some("reply"), Some(3), Some(0x200)));
        assert_eq!(ct.status.unwrap(), ["SEEN_REPLY", "CONFIRMED", "DST_NAT", "DST_NAT_DONE"]);
        assert_eq!(n.of(&event(ct_flags::NFCT, 2, 0), false).unwrap().state, "NEW");
        let untracked = n.of(&event(ct_flags::NFCT, 7, 0), false).unwrap();
        assert_eq!((untracked.state, untracked.direction, untracked.status), ("UNTRACKED", None, None));
        assert_eq!(n.of(&event(ct_flags::NFCT, 5, 0), false), None, "a value the kernel does not name is not guessed");
    }

    #[test]
    fn no_entry_is_invalid_only_where_netfilter_dropped() {
        let n = names();
        assert_eq!(n.of(&event(ct_flags::MARK, 0, 0), true).unwrap().state, "INVALID");
        assert_eq!(n.of(&event(ct_flags::MARK, 0, 0), false), None);
        assert_eq!(CtNames::default().of(&event(ct_flags::NFCT, 2, 0), true), None, "no enum in BTF: no ct");
    }

    #[test]
    fn json_marks_are_hex() {
        let ct = names().of(&event(ct_flags::NFCT | ct_flags::CT_MARK, 2, 0), false).unwrap();
        assert_eq!(serde_json::to_string(&ct).unwrap(), r#"{"state":"NEW","direction":"original","mark":"0x200"}"#);
    }
}
