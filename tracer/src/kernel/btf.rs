//! Struct field offsets from the running kernel's BTF. Rust eBPF has no CO-RE, so the loader
//! computes every offset the programs use and hands them over as globals.
use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Struct, Type};
use tracer_common::Offsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";
/// Test-only: read BTF from this file instead of [`VMLINUX`] (tests/tests/robust/ feeds a
/// missing file, or the kernel's BTF without `enum skb_drop_reason`). Not for production use:
/// the programs still load against the running kernel.
pub const TEST_BTF_ENV: &str = "TRACER_TEST_BTF_PATH";

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        match std::env::var(TEST_BTF_ENV) {
            Ok(path) if !path.is_empty() => Self::from_file(&path),
            _ => Self::from_file(VMLINUX),
        }
    }

    /// Parses a raw BTF blob (the format of /sys/kernel/btf/vmlinux).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self { btf: Btf::from_bytes(bytes).context("cannot parse BTF")? })
    }

    pub fn from_file(path: &str) -> Result<Self> {
        if !std::path::Path::new(path).exists() {
            bail!(
                "this kernel exposes no BTF ({path} is missing): tracer needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
            );
        }
        // Mapped, not parsed into memory: parsing all of vmlinux's BTF costs ~40 MB of heap, for
        // the few dozen lookups made at start. Kernels whose BTF file cannot be mapped (< 6.16)
        // get the parsing backend.
        let btf = Btf::from_file_with_backend(path, btf_rs::Backend::Mmap)
            .or_else(|_| Btf::from_file(path))
            .with_context(|| format!("cannot parse kernel BTF {path}"))?;
        Ok(Self { btf })
    }

    fn named_struct(&self, name: &str) -> Result<Struct> {
        let types = self.btf.resolve_types_by_name(name).map_err(|e| anyhow!("BTF has no struct {name}: {e}"))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("BTF has no struct {name}"))
    }

    /// Strips typedefs and qualifiers down to a struct or union, if there is one.
    fn as_composite(&self, mut t: Type) -> Option<Struct> {
        for _ in 0..16 {
            match t {
                Type::Struct(s) | Type::Union(s) => return Some(s),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                    t = self.btf.resolve_chained_type(t.as_btf_type()?).ok()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset, type and bitfield size (None: not a bitfield) of `name` in `s`, looking
    /// through anonymous structs and unions.
    fn find_member(&self, s: &Struct, name: &str, depth: u32) -> Option<(u32, Type, Option<u32>)> {
        if depth > 8 {
            return None;
        }
        for m in &s.members {
            let mname = self.btf.resolve_name(m).unwrap_or_default();
            let ty = self.btf.resolve_chained_type(m).ok()?;
            if mname == name {
                return Some((m.bit_offset(), ty, m.bitfield_size().filter(|&b| b != 0)));
            }
            if mname.is_empty()
                && let Some(inner) = self.as_composite(ty)
                && let Some((off, t, bits)) = self.find_member(&inner, name, depth + 1)
            {
                // Corrupt BTF may overflow (found by fuzzing): no such member then.
                return Some((m.bit_offset().checked_add(off)?, t, bits));
            }
        }
        None
    }

    /// Byte offset of a dotted field path, e.g. `member_offset("net", "ns.inum")`.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32> {
        let mut s = self.named_struct(strukt)?;
        let mut bits = 0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let (off, ty, _) = self
                .find_member(&s, part, 0)
                .ok_or_else(|| anyhow!("struct {strukt} has no field {path} in this kernel's BTF"))?;
            bits = u32::checked_add(bits, off).ok_or_else(|| anyhow!("struct {strukt} field {path}: offset out of range in this BTF"))?;
            if parts.peek().is_some() {
                s = self
                    .as_composite(ty)
                    .ok_or_else(|| anyhow!("{strukt}.{path}: {part} is not a struct"))?;
            }
        }
        if bits % 8 != 0 {
            bail!("{strukt}.{path} is a bitfield");
        }
        Ok(bits / 8)
    }

    /// `strukt.name` as a bitfield of `bits` bits within one byte: (byte offset, shift in that
    /// byte). x86-64 is little-endian: BTF bit offsets count from a byte's lowest bit.
    pub fn bitfield_in_byte(&self, strukt: &str, name: &str, bits: u32) -> Option<(u32, u32)> {
        let s = self.named_struct(strukt).ok()?;
        let (off, _, size) = self.find_member(&s, name, 0)?;
        (size == Some(bits) && off % 8 + bits <= 8).then_some((off / 8, off % 8))
    }

    /// Byte offset of `strukt.name` when it is an integer of `size` bytes (through typedefs).
    fn int_member(&self, strukt: &str, name: &str, size: usize) -> Option<u32> {
        let s = self.named_struct(strukt).ok()?;
        let (off, mut ty, bits) = self.find_member(&s, name, 0)?;
        for _ in 0..8 {
            match ty {
                Type::Int(i) => return (i.size() == size && bits.is_none() && off % 8 == 0).then_some(off / 8),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) => ty = self.btf.resolve_chained_type(ty.as_btf_type()?).ok()?,
                _ => return None,
            }
        }
        None
    }

    /// The enumerators of `enum name`, as (name, value).
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let types = self.btf.resolve_types_by_name(name).map_err(|e| anyhow!("BTF has no enum {name}: {e}"))?;
        for t in types {
            match t {
                Type::Enum(e) => {
                    return Ok(e
                        .members
                        .iter()
                        .map(|m| (self.btf.resolve_name(m).unwrap_or_default(), u64::from(m.val())))
                        .collect());
                }
                Type::Enum64(e) => {
                    return Ok(e
                        .members
                        .iter()
                        .map(|m| (self.btf.resolve_name(m).unwrap_or_default(), m.val()))
                        .collect());
                }
                _ => {}
            }
        }
        bail!("BTF has no enum {name}")
    }

    /// BTF id of `typedef name` (e.g. `btf_trace_kfree_skb`, the target of a `tp_btf` program).
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |t| matches!(t, Type::Typedef(_)))
    }

    /// BTF id of `struct name`.
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |t| matches!(t, Type::Struct(_)))
    }

    /// BTF id of function `name` (the target of an fentry program).
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |t| matches!(t, Type::Func(_)))
    }

    fn id_of(&self, name: &str, kind: fn(&Type) -> bool) -> Option<u32> {
        let ids = self.btf.resolve_ids_by_name(name).ok()?;
        ids.into_iter().find(|&id| self.btf.resolve_type_by_id(id).is_ok_and(|t| kind(&t)))
    }

    /// Every offset the kernel programs need. Fields the probes cannot work without are errors;
    /// the rest are `u32::MAX` (the program then skips them).
    pub fn offsets(&self) -> Result<Offsets> {
        let need = |s: &str, f: &str| self.member_offset(s, f);
        let opt = |s: &str, f: &str| self.member_offset(s, f).unwrap_or(u32::MAX);
        let mut o = Offsets {
            skb_len: need("sk_buff", "len")?,
            skb_data_len: need("sk_buff", "data_len")?,
            skb_head: need("sk_buff", "head")?,
            skb_data: need("sk_buff", "data")?,
            skb_mac_header: need("sk_buff", "mac_header")?,
            skb_network_header: need("sk_buff", "network_header")?,
            skb_protocol: opt("sk_buff", "protocol"),
            skb_dev: need("sk_buff", "dev")?,
            skb_sk: opt("sk_buff", "sk"),
            dev_ifindex: need("net_device", "ifindex")?,
            dev_name: need("net_device", "name")?,
            dev_nd_net: opt("net_device", "nd_net.net"),
            net_ns_inum: opt("net", "ns.inum"),
            sk_net: opt("sock", "__sk_common.skc_net.net"),
            skb_mark: opt("sk_buff", "mark"),
            skb_nfct: opt("sk_buff", "_nfct"),
            // `nf_conn` is in vmlinux only when conntrack is built in: `conntrack` fills these.
            ct_status: u32::MAX,
            ct_mark: u32::MAX,
            ct_zone: u32::MAX,
            skb_pkt_type: u32::MAX,
            skb_pkt_type_shift: 0,
            skb_refdst: opt("sk_buff", "_skb_refdst"),
            dst_dev: opt("dst_entry", "dev"),
            dst_input: opt("dst_entry", "input"),
            dev_mtu: opt("net_device", "mtu"),
            // An offset from `head` (`sk_buff_data_t` is `unsigned int` on 64-bit kernels); a
            // pointer there is not read.
            skb_end: self.int_member("sk_buff", "end", 4).unwrap_or(u32::MAX),
            shinfo_gso_size: u32::MAX,
            skb_span_start: 0,
            skb_span_len: 0,
        };
        if let Some((byte, shift)) = self.bitfield_in_byte("sk_buff", "pkt_type", 3) {
            (o.skb_pkt_type, o.skb_pkt_type_shift) = (byte, shift);
        }
        // One 4-byte read takes both: only where gso_segs follows gso_size.
        if let (Ok(size), Ok(segs)) = (self.member_offset("skb_shared_info", "gso_size"), self.member_offset("skb_shared_info", "gso_segs"))
            && segs == size + 2
        {
            o.shinfo_gso_size = size;
        }
        (o.skb_span_start, o.skb_span_len) = skb_span(&o);
        Ok(o)
    }

    /// BTF id of a struct whose first member is an integer array of at least `len` bytes
    /// (`linux_mib`: the SNMP counters, `unsigned long mibs[]`): a view of packet bytes the
    /// verifier lets a program load 8 bytes at a time anywhere in (`tracer-ebpf/src/cast.rs`).
    /// Each load must lie within one member, so a struct of several arrays will not do.
    pub fn byte_view_struct(&self, len: usize) -> Option<u32> {
        const CANDIDATES: &[&str] = &["linux_mib", "ipstats_mib", "icmp_mib", "tcp_mib"];
        CANDIDATES.iter().find_map(|name| {
            let id = self.id_of(name, |t| matches!(t, Type::Struct(_)))?;
            let Ok(Type::Struct(s)) = self.btf.resolve_type_by_id(id) else { return None };
            (self.first_array_bytes(&s) >= len).then_some(id)
        })
    }

    /// Bytes of `s`'s first member when it is an integer array at offset 0 (else 0).
    fn first_array_bytes(&self, s: &Struct) -> usize {
        let Some(m) = s.members.first().filter(|m| m.bit_offset() == 0) else { return 0 };
        match self.btf.resolve_chained_type(m) {
            Ok(Type::Array(a)) => match self.btf.resolve_chained_type(&a) {
                Ok(Type::Int(i)) => i.size().saturating_mul(a.len()),
                _ => 0,
            },
            _ => 0,
        }
    }
}

/// Conntrack's facts as this kernel lays them out: `nf_conn` offsets and the enumerators of
/// `ip_conntrack_info` and `ip_conntrack_status`.
#[derive(Debug, Default)]
pub struct Conntrack {
    pub status: Option<u32>,
    pub mark: Option<u32>,
    pub zone: Option<u32>,
    pub info: Vec<(String, u64)>,
    pub status_bits: Vec<(String, u64)>,
    /// Where they were read (`vmlinux`, or the module's BTF).
    pub source: String,
}

impl KernelBtf {
    /// The `nf_conntrack` module's BTF (split, on top of this one), when it is loaded.
    fn module(&self, name: &str) -> Option<Self> {
        let path = format!("/sys/kernel/btf/{name}");
        if std::env::var_os(TEST_BTF_ENV).is_some() || !std::path::Path::new(&path).exists() {
            return None;
        }
        Btf::from_split_file(&path, &self.btf).ok().map(|btf| Self { btf })
    }

    /// Conntrack's layout: from vmlinux when it is built in, else from its module's BTF (a
    /// module not loaded yet has no entries to report: every field is then absent).
    pub fn conntrack(&self) -> Conntrack {
        let module;
        let (btf, source) = if self.named_struct("nf_conn").is_ok() {
            (self, "vmlinux")
        } else if let Some(m) = self.module("nf_conntrack") {
            module = m;
            (&module, "nf_conntrack")
        } else {
            return Conntrack::default();
        };
        let enums = |name: &str| btf.enum_values(name).or_else(|_| self.enum_values(name)).unwrap_or_default();
        Conntrack {
            status: btf.member_offset("nf_conn", "status").ok(),
            mark: btf.member_offset("nf_conn", "mark").ok(),
            zone: btf.member_offset("nf_conn", "zone.id").ok(),
            info: enums("ip_conntrack_info"),
            status_bits: enums("ip_conntrack_status"),
            source: source.into(),
        }
    }
}

impl Conntrack {
    /// Into the programs' offsets (absent fields stay `u32::MAX`).
    pub fn apply(&self, o: &mut Offsets) {
        o.ct_status = self.status.unwrap_or(u32::MAX);
        o.ct_mark = self.mark.unwrap_or(u32::MAX);
        o.ct_zone = self.zone.unwrap_or(u32::MAX);
    }
}

/// The 8-aligned part of `sk_buff` that holds every field the probes read (sizes as the
/// fields' C types), or (0, 0) when it is longer than `SKB_SPAN_MAX`.
fn skb_span(o: &Offsets) -> (u32, u32) {
    let fields = [
        (o.skb_len, 4),
        (o.skb_data_len, 4),
        (o.skb_head, 8),
        (o.skb_data, 8),
        (o.skb_mac_header, 2),
        (o.skb_network_header, 2),
        (o.skb_protocol, 2),
        (o.skb_dev, 8),
        (o.skb_sk, 8),
    ];
    let present = fields.iter().filter(|(off, _)| *off != u32::MAX);
    let start = present.clone().map(|(off, _)| *off).min().unwrap_or(0) & !7;
    let end = present.map(|(off, size)| off.saturating_add(*size)).max().unwrap_or(0);
    let len = end.saturating_sub(start);
    if len == 0 || len as usize > tracer_common::SKB_SPAN_MAX { (0, 0) } else { (start, len) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small kernel-like BTF (the fuzz seed, built by hand with 6.18's offsets): fields behind
    /// an anonymous union, nested paths, the drop-reason enum, the `tp_btf` typedef.
    #[test]
    fn offsets_from_a_small_blob() {
        let b = KernelBtf::from_bytes(include_bytes!("../../../fuzz/corpus/btf/kernel-like-small")).unwrap();
        let o = b.offsets().unwrap();
        assert_eq!((o.skb_len, o.skb_head, o.skb_dev, o.dev_name, o.dev_ifindex), (112, 192, 16, 280, 224));
        assert_eq!(o.net_ns_inum, 136);
        assert_eq!(o.skb_sk, u32::MAX, "absent fields are marked, not errors");
        assert_eq!((o.skb_span_start, o.skb_span_len), (16, 192), "dev at 16 to data's end at 208: one read");
        assert_eq!(b.member_offset("bpf_nf_ctx", "skb").unwrap(), 8);
        let reasons = b.enum_values("skb_drop_reason").unwrap();
        assert!(reasons.contains(&("SKB_DROP_REASON_NETFILTER_DROP".into(), 12)));
        assert!(b.typedef_id("btf_trace_kfree_skb").is_some() && b.func_id("ip_rcv").is_some());
        assert!(KernelBtf::from_bytes(b"not BTF").is_err());
    }

    /// The running kernel's own layout (where it has BTF): the skb facts' offsets are found,
    /// `pkt_type` as a 3-bit field inside one byte.
    #[test]
    fn skb_facts_offsets_on_this_kernel() {
        let Ok(b) = KernelBtf::from_file("/sys/kernel/btf/vmlinux") else { return };
        let o = b.offsets().unwrap();
        for (name, off) in [("pkt_type", o.skb_pkt_type), ("_skb_refdst", o.skb_refdst), ("dst_entry.dev", o.dst_dev), ("dst_entry.input", o.dst_input), ("mtu", o.dev_mtu), ("end", o.skb_end), ("gso_size", o.shinfo_gso_size)] {
            assert_ne!(off, u32::MAX, "{name}");
        }
        assert!(o.skb_pkt_type_shift < 6, "three bits in one byte");
        assert_eq!(b.member_offset("skb_shared_info", "gso_segs").unwrap(), o.shinfo_gso_size + 2);
    }

    /// Found by `cargo xtask fuzz --target btf`: member offsets that overflow when added up
    /// (a nested struct at a huge bit offset) are an error, not a panic or a wrapped offset.
    #[test]
    fn overflowing_offsets_are_an_error() {
        let b = KernelBtf::from_bytes(include_bytes!("../../../fuzz/corpus/btf/regression-offset-overflow")).unwrap();
        let _ = b.offsets();
        for (s, f) in [("sk_buff", "len"), ("net", "ns.inum"), ("net_device", "nd_net.net"), ("bpf_nf_ctx", "skb")] {
            if let Ok(off) = b.member_offset(s, f) {
                assert!(off < 1 << 29, "{s}.{f} at {off}");
            }
        }
    }
}
