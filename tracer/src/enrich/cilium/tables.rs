//! Cilium's own numbers as data, each table with the releases it was read from (our tables,
//! their facts; sources in cilium/cilium):
//! - drop reasons: `pkg/monitor/api/drop.go` `errors` (= `bpf/lib/common.h`/`drop_reasons.h`
//!   `DROP_*` negated); the metrics map keys a drop by that positive code (`DropMin` = 130).
//! - file ids: `pkg/monitor/api/files.go` (= `bpf/source_names_to_ids.h`, later
//!   `bpf/lib/source_info.h` `__id_for_file`): the `__MAGIC_FILE__` of the metrics key.
//! - metrics direction: `bpf/lib/common.h` `METRIC_INGRESS` 1, `METRIC_EGRESS` 2,
//!   `METRIC_SERVICE` 3.
//! - reserved identities: `pkg/identity/numericidentity.go`.
//!
//! A code or id outside a table prints as a number (`unknown(N)` for files, as Cilium does).

/// Codes below this are not drops (`DropMin` in drop.go): forwarded/trace reasons.
pub const DROP_MIN: u8 = 130;
pub const DROP_POLICY: u8 = 133;
pub const DROP_POLICY_DENY: u8 = 181;
pub const DROP_POLICY_AUTH_REQUIRED: u8 = 189;

/// Drop reasons valid for Cilium 1.14–1.18 (codes 130–198 kept their meaning across these
/// releases; 161 read "Failed to insert into proxymap" before 1.14 and is not used by them).
/// Codes added after 1.16 (199 and up) are not named here: they print as numbers.
const REASONS: &[(u8, &str)] = &[
    (130, "Invalid source mac"),
    (131, "Invalid destination mac"),
    (132, "Invalid source ip"),
    (133, "Policy denied"),
    (134, "Invalid packet"),
    (135, "CT: Truncated or invalid header"),
    (136, "Fragmentation needed"),
    (137, "CT: Unknown L4 protocol"),
    (138, "CT: Can't create entry from packet"),
    (139, "Unsupported L3 protocol"),
    (140, "Missed tail call"),
    (141, "Error writing to packet"),
    (142, "Unknown L4 protocol"),
    (143, "Unknown ICMPv4 code"),
    (144, "Unknown ICMPv4 type"),
    (145, "Unknown ICMPv6 code"),
    (146, "Unknown ICMPv6 type"),
    (147, "Error retrieving tunnel key"),
    (148, "Error retrieving tunnel options"),
    (149, "Invalid Geneve option"),
    (150, "Unknown L3 target address"),
    (151, "Stale or unroutable IP"),
    (152, "No matching local container found"),
    (153, "Error while correcting L3 checksum"),
    (154, "Error while correcting L4 checksum"),
    (155, "CT: Map insertion failed"),
    (156, "Invalid IPv6 extension header"),
    (157, "IP fragmentation not supported"),
    (158, "Service backend not found"),
    (160, "No tunnel/encapsulation endpoint (datapath BUG!)"),
    (161, "NAT 46/64 not enabled"),
    (162, "Reached EDT rate-limiting drop horizon"),
    (163, "Unknown connection tracking state"),
    (164, "Local host is unreachable"),
    (165, "No configuration available to perform policy decision"),
    (166, "Unsupported L2 protocol"),
    (167, "No mapping for NAT masquerade"),
    (168, "Unsupported protocol for NAT masquerade"),
    (169, "FIB lookup failed"),
    (170, "Encapsulation traffic is prohibited"),
    (171, "Invalid identity"),
    (172, "Unknown sender"),
    (173, "NAT not needed"),
    (174, "Is a ClusterIP"),
    (175, "First logical datagram fragment not found"),
    (176, "Forbidden ICMPv6 message"),
    (177, "Denied by LB src range check"),
    (178, "Socket lookup failed"),
    (179, "Socket assign failed"),
    (180, "Proxy redirection not supported for protocol"),
    (181, "Policy denied by denylist"),
    (182, "VLAN traffic disallowed by VLAN filter"),
    (183, "Incorrect VNI from VTEP"),
    (184, "Failed to update or lookup TC buffer"),
    (185, "No SID was found for the IP address"),
    (186, "SRv6 state was removed during tail call"),
    (187, "L3 translation from IPv4 to IPv6 failed (NAT46)"),
    (188, "L3 translation from IPv6 to IPv4 failed (NAT64)"),
    (189, "Authentication required"),
    (190, "No conntrack map found"),
    (191, "No nat map found"),
    (192, "Invalid ClusterID"),
    (193, "Unsupported packet protocol for DSR encapsulation"),
    (194, "No egress gateway found"),
    (195, "Traffic is unencrypted"),
    (196, "TTL exceeded"),
    (197, "No node ID found"),
    (198, "Rate limited"),
];

/// File ids of Cilium 1.14–1.17 (`source_names_to_ids.h`; 114/115 and `bpf_wireguard.c`
/// appeared in 1.17, no earlier release uses those ids for anything else).
const FILES_1_14: &[(u8, &str)] = &[
    (1, "bpf_host.c"),
    (2, "bpf_lxc.c"),
    (3, "bpf_overlay.c"),
    (4, "bpf_xdp.c"),
    (5, "bpf_sock.c"),
    (6, "bpf_network.c"),
    (7, "bpf_wireguard.c"),
    (101, "arp.h"),
    (102, "drop.h"),
    (103, "srv6.h"),
    (104, "icmp6.h"),
    (105, "nodeport.h"),
    (106, "lb.h"),
    (107, "mcast.h"),
    (108, "ipv4.h"),
    (109, "conntrack.h"),
    (110, "l3.h"),
    (111, "trace.h"),
    (112, "encap.h"),
    (113, "encrypt.h"),
    (114, "host_firewall.h"),
    (115, "nodeport_egress.h"),
];

/// File ids of Cilium 1.18+ (`source_info.h`: the header list was renumbered).
const FILES_1_18: &[(u8, &str)] = &[
    (1, "bpf_host.c"),
    (2, "bpf_lxc.c"),
    (3, "bpf_overlay.c"),
    (4, "bpf_xdp.c"),
    (5, "bpf_sock.c"),
    (6, "bpf_network.c"),
    (7, "bpf_wireguard.c"),
    (101, "drop.h"),
    (102, "srv6.h"),
    (103, "icmp6.h"),
    (104, "nodeport.h"),
    (105, "lb.h"),
    (106, "mcast.h"),
    (107, "ipv4.h"),
    (108, "conntrack.h"),
    (109, "local_delivery.h"),
    (110, "trace.h"),
    (111, "encap.h"),
    (112, "host_firewall.h"),
    (113, "nodeport_egress.h"),
    (114, "ipv6.h"),
    (115, "classifiers.h"),
];

const RESERVED_IDENTITIES: &[(u32, &str)] = &[
    (1, "reserved:host"),
    (2, "reserved:world"),
    (3, "reserved:unmanaged"),
    (4, "reserved:health"),
    (5, "reserved:init"),
    (6, "reserved:remote-node"),
    (7, "reserved:kube-apiserver"),
    (8, "reserved:ingress"),
    (9, "reserved:world-ipv4"),
    (10, "reserved:world-ipv6"),
];

fn find<K: PartialEq + Copy, V: Copy>(t: &[(K, V)], k: K) -> Option<V> {
    t.iter().find(|(c, _)| *c == k).map(|(_, v)| *v)
}

/// "Policy denied", or the number when this table does not know the code.
pub fn reason(code: u8) -> String {
    find(REASONS, code).map_or_else(|| code.to_string(), str::to_string)
}

/// The source file of a metrics key; `new_ids`: the layout is 1.18+.
pub fn file(id: u8, new_ids: bool) -> String {
    find(if new_ids { FILES_1_18 } else { FILES_1_14 }, id).map_or_else(|| format!("unknown({id})"), str::to_string)
}

pub fn direction(dir: u8) -> Option<&'static str> {
    match dir {
        1 => Some("ingress"),
        2 => Some("egress"),
        3 => Some("service"),
        _ => None,
    }
}

/// The labels of a reserved identity; pod identities' labels live in the agent, not in maps.
pub fn reserved_labels(identity: u32) -> Option<&'static str> {
    find(RESERVED_IDENTITIES, identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_codes_and_files_per_version() {
        assert_eq!(reason(133), "Policy denied");
        assert_eq!(reason(181), "Policy denied by denylist");
        assert_eq!(reason(159), "159");
        assert_eq!(reason(250), "250");
        assert_eq!(file(2, false), "bpf_lxc.c");
        assert_eq!(file(101, false), "arp.h");
        assert_eq!(file(101, true), "drop.h");
        assert_eq!(file(99, true), "unknown(99)");
        assert_eq!(direction(2), Some("egress"));
        assert_eq!(reserved_labels(2), Some("reserved:world"));
        assert_eq!(reserved_labels(3000), None);
    }
}
