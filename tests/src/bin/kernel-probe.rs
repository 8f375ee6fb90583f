//! `kernel-probe`: one JSON line per BPF feature the tracer and the tests rely on, each found by
//! loading and attaching a do-nothing program (`integration_tests::kernel`):
//! `{"type":"probe","name":"fentry","ok":true,"detail":"fentry attached to tcp_v4_rcv"}`.
//! `cargo xtask vm-test` runs it inside every guest kernel and reports the answers. Needs root.
use integration_tests::Feature;

fn main() {
    for f in Feature::ALL {
        let (ok, detail) = match f.probe() {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        println!("{}", serde_json::json!({"type": "probe", "name": f.name(), "ok": ok, "detail": detail}));
    }
}
