//! libcni cache entries (`/var/lib/cni/results/*`): any bytes parse to an entry or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = tracer::pods::cni::parse(data) {
        let _ = format!("{e:?}");
    }
});
