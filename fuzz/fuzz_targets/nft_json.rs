//! `nft -j list ruleset` with `nft -a list ruleset` beside it (input split at the first NUL):
//! any pair parses to a ruleset.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::netfilter::nft::Ruleset;

fuzz_target!(|data: &[u8]| {
    let (json, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let r = Ruleset::parse(&String::from_utf8_lossy(json), &String::from_utf8_lossy(text));
    let _ = r.base_chains().count();
    let _ = format!("{r:?}");
});
