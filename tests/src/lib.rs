//! Testbed for `tracer`: a Cilium-native-routing-like node built from network namespaces, real
//! traffic with exact counts, a runner for the `tracer` binary and a tc fixture that plants
//! drops. Used by the integration tests here, by `cargo xtask bench` and by other issues' tests.
//!
//! Everything needs root. Every resource (namespace, link, route, rule, process, file) is owned
//! by a value whose `Drop` removes it, also when a test panics; every wait is bounded.
//!
//! ```no_run
//! use integration_tests::{Node, Tracer};
//! let node = Node::new(2)?;
//! let (a, b) = (node.pod(0), node.pod(1));
//! let run = Tracer::from_env()?.capture().expression(format!("host {} and udp port 7001", b.ip)).start()?;
//! a.send_udp(7000, b.addr(7001), 10, b"x")?;
//! let done = run.stop()?;
//! assert_eq!(done.drops()?, 10);
//! # Ok::<(), anyhow::Error>(())
//! ```
#![expect(
    clippy::missing_errors_doc,
    reason = "test support: every error names the tool, kernel call or wait that failed"
)]

pub mod cilium_fixture;
pub mod cmd;
pub mod cni;
pub mod expect;
pub mod frames;
pub mod kernel;
pub mod kube;
pub mod netns;
pub mod node;
pub mod pcap;
pub mod podman;
pub mod progress;
pub mod rules;
pub mod segments;
pub mod tc_fixture;
pub mod tempdir;
pub mod tracer;
pub mod traffic;
pub mod wait;
pub mod watch;

pub use cilium_fixture::{CiliumFixture, CiliumLayout, CiliumOptions};
pub use kernel::{Feature, require, skip, unchecked};
pub use node::{IptRule, Node, NodeOptions, Pod};
pub use tc_fixture::{Attach, Direction, FixtureStats, ProgInfo, TcFixture, TcFixtureOptions, fixture_bin};
pub use tempdir::TempDir;
pub use tracer::{Capture, Finished, RunningCapture, Tracer, function, symbol};
pub use traffic::{ConnectResults, TcpListener, UdpListener};

/// True when running as root (the whole testbed needs it).
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
