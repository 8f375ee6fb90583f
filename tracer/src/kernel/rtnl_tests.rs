//! rtnetlink message parsing, on hand-built messages.
use super::*;

#[test]
fn attrs_stop_at_garbage() {
    let mut b = Vec::new();
    put_attr(&mut b, TCA_KIND, b"bpf\0");
    put_attr(&mut b, 9, &[1, 2, 3]);
    b.extend_from_slice(&[200, 0, 1, 0]); // claims 200 bytes
    let v: Vec<_> = attrs(&b).collect();
    assert_eq!(v, vec![(TCA_KIND, &b"bpf\0"[..]), (9, &[1u8, 2, 3][..])]);
}

#[test]
fn parses_a_bpf_filter_message() {
    let mut p = tcmsg(7, 1, CLSACT_INGRESS, (1 << 16) | u32::from(PROTO_ALL));
    put_attr(&mut p, TCA_KIND, b"bpf\0");
    let mut o = Vec::new();
    put_attr(&mut o, TCA_BPF_ID, &42u32.to_ne_bytes());
    put_attr(&mut o, TCA_BPF_NAME, b"bpf_lxc.o:[from-container]\0");
    put_attr(&mut o, TCA_BPF_FLAGS, &1u32.to_ne_bytes());
    put_attr(&mut o, TCA_BPF_TAG, &[1, 2, 3, 4, 5, 6, 7, 8]);
    put_attr(&mut p, TCA_OPTIONS | NLA_F_NESTED, &o);
    let f = parse_filter(&p).unwrap();
    assert_eq!((f.prio, f.protocol, f.handle, f.kind.as_str()), (1, PROTO_ALL, 1, "bpf"));
    let b = f.bpf.unwrap();
    assert_eq!(b.prog_id, Some(42));
    assert_eq!(b.name.as_deref(), Some("bpf_lxc.o:[from-container]"));
    assert!(b.direct_action);
    assert_eq!(b.tag, Some([1, 2, 3, 4, 5, 6, 7, 8]));
    // The per-priority classifier message (handle 0) is not a filter.
    assert!(parse_filter(&tcmsg(7, 0, CLSACT_INGRESS, 1 << 16)).is_none());
    // Truncated input never panics.
    for n in 0..p.len() {
        let _ = parse_filter(&p[..n]);
    }
}

#[test]
fn parses_a_link_and_its_xdp_program() {
    // ifinfomsg: family, pad, type, index, flags, change.
    let mut p = vec![0u8; 16];
    p[4..8].copy_from_slice(&7u32.to_ne_bytes());
    put_attr(&mut p, IFLA_IFNAME, b"lxc1\0");
    let mut x = Vec::new();
    put_attr(&mut x, IFLA_XDP.1, &[0]);
    let mut with = p.clone();
    put_attr(&mut p, IFLA_XDP.0 | NLA_F_NESTED, &x);
    let l = parse_link(&p).unwrap();
    assert_eq!((l.ifindex, l.name.as_str(), l.xdp), (7, "lxc1", false));
    let mut x = Vec::new();
    put_attr(&mut x, IFLA_XDP.1, &[1]);
    put_attr(&mut with, IFLA_XDP.0 | NLA_F_NESTED, &x);
    assert!(parse_link(&with).unwrap().xdp);
}
