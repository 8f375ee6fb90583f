//! `iptables-save -c` output: any text parses (errors are collected, not raised), and the
//! accessors the attribution uses work on the result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::netfilter::iptables::Save;

fuzz_target!(|data: &[u8]| {
    let save = Save::parse(&String::from_utf8_lossy(data));
    let _ = save.rule_count();
    let _ = save.is_pristine();
    for t in ["filter", "nat", "mangle", "raw"] {
        for c in ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"] {
            let _ = save.chain(t, c);
        }
    }
    let _ = tracer::netfilter::iptables::tokenize(&String::from_utf8_lossy(data));
});
