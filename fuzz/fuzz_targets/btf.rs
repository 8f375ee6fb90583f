//! Kernel BTF blobs: any bytes give offsets/enums/ids or an error, never a panic or a hang
//! (cyclic or deeply nested types included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::kernel::btf::KernelBtf;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = KernelBtf::from_bytes(data) else { return };
    let _ = btf.offsets();
    let _ = btf.member_offset("sk_buff", "len");
    let _ = btf.member_offset("net", "ns.inum");
    let _ = btf.member_offset("bpf_nf_ctx", "skb");
    if let Ok(v) = btf.enum_values("skb_drop_reason") {
        let _ = tracer::kernel::reasons::Reasons::from_sources(Ok(v), || unreachable!("BTF gave the enum"));
    }
    let _ = btf.typedef_id("btf_trace_kfree_skb");
    let _ = btf.func_id("ip_rcv");
});
