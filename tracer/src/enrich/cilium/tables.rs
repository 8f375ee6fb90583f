//! Cilium's own numbers as data, each table with the releases it holds for (our tables, their
//! facts). Every table was checked, value by value, against cilium/cilium at the release-prep
//! commit of every patch release from v1.14.0 to v1.18.3 (the commit whose `VERSION` reads
//! that release, on the v1.14/v1.15/v1.16/v1.17/v1.18 release branches; e.g. v1.14.0
//! b5013e1562, v1.15.0 2db45c4689, v1.16.0 82999990bc, v1.17.0 c2bbf787ea, v1.18.0
//! 274205f001, v1.18.3 c160168901, the newest release that could be read here):
//! - drop reasons: `pkg/monitor/api/drop.go` `errors`, the names Cilium itself prints; the
//!   metrics map keys a drop by that positive code (`DropMin` = 130 in every release).
//! - file ids: `bpf/lib/source_info.h` `_strcase_` and `pkg/monitor/api/files.go` (identical
//!   in each release): the `__MAGIC_FILE__` of the metrics key, which exists from 1.16.0 on.
//! - metrics direction: `bpf/lib/common.h` `METRIC_INGRESS` 1, `METRIC_EGRESS`, `METRIC_SERVICE`.
//! - reserved identities: `pkg/identity/numericidentity.go` and `pkg/labels` `IDName*`.
//!
//! A code or id outside a table prints as a number (`unknown(N)` for files, as Cilium does).

/// Codes below this are not drops (`DropMin` in drop.go): forwarded/trace reasons.
pub const DROP_MIN: u8 = 130;
pub const DROP_POLICY: u8 = 133;
pub const DROP_POLICY_DENY: u8 = 181;
pub const DROP_POLICY_AUTH_REQUIRED: u8 = 189;

/// Drop reasons of Cilium 1.14.0–1.18.3. No code changed its name in any of those 54 releases
/// (checked against every one); codes were only added, so a name is right for every release
/// that can emit the code. The release that added a code is noted where it is not 1.14.0.
/// 159 is in no release's table; 206 and up are in no release checked: numbers.
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
    (195, "Traffic is unencrypted"), // 1.15.0
    (196, "TTL exceeded"),
    (197, "No node ID found"), // 1.14.1
    (198, "Rate limited"),                           // 1.15.0
    (199, "IGMP handled"),                           // 1.15.4
    (200, "IGMP subscribed"),                        // 1.15.4
    (201, "Multicast handled"),                      // 1.15.4
    (202, "Host datapath not ready"),                // 1.14.6
    (203, "Endpoint policy program not available"),  // 1.15.6
    (204, "No Egress IP configured"),                // 1.16.2
    (205, "Punt to proxy"),                          // 1.18.0
];

/// File ids with one meaning in every release 1.16.0–1.18.3 (identical within each of those
/// minor releases; 114 and 115 exist from 1.17.0). 1.14 and 1.15 have no file in the metrics
/// key (their ids only reach `cilium_events`, which tracer never reads), so need no table.
const FILES: &[(u8, &str)] = &[
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
    (111, "trace.h"),
    (112, "encap.h"),
    (113, "encrypt.h"),
    (114, "host_firewall.h"),   // 1.17.0
    (115, "nodeport_egress.h"), // 1.17.0
];

/// 1.16.0–1.17.8 only.
const FILES_1_16: &[(u8, &str)] = &[(110, "l3.h")];

/// 1.18.0–1.18.3 only (`l3.h` became `local_delivery.h`). The v1.19 development tree
/// renumbers the headers (101 = `drop.h`): no release of it could be checked here, which is
/// one reason its layout is refused (see `layout.rs`).
const FILES_1_18: &[(u8, &str)] = &[(110, "local_delivery.h"), (116, "ipv6.h"), (117, "classifiers.h")];

/// Reserved identities: 1–8 in 1.14.0–1.18.3, 9–10 from 1.15.0, 11 from 1.16.0 (same
/// numbers and names wherever present).
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
    (11, "reserved:overlay-to-encrypt"),
];

fn find<K: PartialEq + Copy, V: Copy>(t: &[(K, V)], k: K) -> Option<V> {
    t.iter().find(|(c, _)| *c == k).map(|(_, v)| *v)
}

/// "Policy denied", or the number when this table does not know the code.
pub fn reason(code: u8) -> String {
    find(REASONS, code).map_or_else(|| code.to_string(), str::to_string)
}

/// Which release's file ids a metrics key uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileIds {
    V1_16,
    V1_18,
}

/// The source file of a metrics key; `None` for id 0: no file recorded (1.14 and 1.15 keep
/// those bytes reserved, zero).
pub fn file(id: u8, ids: FileIds) -> Option<String> {
    let table = match ids {
        FileIds::V1_16 => FILES_1_16,
        FileIds::V1_18 => FILES_1_18,
    };
    (id != 0).then(|| find(FILES, id).or_else(|| find(table, id)).map_or_else(|| format!("unknown({id})"), str::to_string))
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
        assert_eq!(reason(205), "Punt to proxy", "the newest checked release's codes are named");
        assert_eq!(reason(206), "206", "a code of no checked release prints as a number");
        assert_eq!(reason(250), "250");
        assert_eq!(file(2, FileIds::V1_16).as_deref(), Some("bpf_lxc.c"));
        assert_eq!(file(101, FileIds::V1_16).as_deref(), Some("arp.h"));
        assert_eq!(file(110, FileIds::V1_16).as_deref(), Some("l3.h"));
        assert_eq!(file(110, FileIds::V1_18).as_deref(), Some("local_delivery.h"));
        assert_eq!(file(117, FileIds::V1_18).as_deref(), Some("classifiers.h"));
        assert_eq!(file(116, FileIds::V1_16).as_deref(), Some("unknown(116)"));
        assert_eq!(file(0, FileIds::V1_16), None, "1.14/1.15 keys carry no file");
        assert_eq!(reserved_labels(11), Some("reserved:overlay-to-encrypt"));
        assert_eq!(direction(2), Some("egress"));
        assert_eq!(reserved_labels(2), Some("reserved:world"));
        assert_eq!(reserved_labels(3000), None);
    }
}
