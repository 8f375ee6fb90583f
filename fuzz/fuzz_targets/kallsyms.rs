//! `/proc/kallsyms` text: any text parses, and any address symbolizes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (addrs, text) = data.split_at(data.len().min(16));
    let k = tracer::kernel::kallsyms::Kallsyms::parse(&String::from_utf8_lossy(text));
    for a in addrs.chunks(8) {
        let mut b = [0u8; 8];
        b[..a.len()].copy_from_slice(a);
        let _ = k.symbolize(u64::from_le_bytes(b) | 0xffff_ffff_8000_0000);
        let _ = k.symbolize(u64::from_le_bytes(b));
    }
});
