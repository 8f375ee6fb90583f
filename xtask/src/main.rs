//! `cargo xtask`: the project's own tasks, so a fresh Debian 12 machine needs only rustup and
//! cargo. Each subcommand lives in its own file; to add one, write `src/NAME.rs` with a `run`
//! function (and an `Args` struct if it takes options), then add a variant and a match arm here.
mod bench;
mod build;
mod clippy;
mod cmd;
mod fuzz;
mod hog;
mod image;
mod run;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Set up, build, run and test tracer."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (Debian packages, bpf-linker, rust-src).
    /// Idempotent: does nothing when everything is present.
    Setup,
    /// Setup, then build target/release/tracer (eBPF object embedded).
    Build,
    /// Setup and build, then run target/release/tracer with the given arguments,
    /// e.g. `cargo xtask run -- capture --duration 30s udp port 53`.
    Run(run::Args),
    /// Setup and build, then run every test: host unit tests, then the integration tests
    /// (real kernel, real traffic: needs root).
    Test(test::Args),
    /// Lint with `-D warnings`: the host crates, then the eBPF crate for bpfel-unknown-none.
    Clippy,
    /// Boot Debian's 6.1 and/or 6.12 cloud kernels under QEMU (TCG) with the integration tests
    /// in an initramfs, run them there and report per kernel (artifacts in target/vm/).
    VmTest(vm::Args),
    /// Fuzz the parsers and interpreters tracer owns (fuzz/, cargo-fuzz on nightly; installs
    /// both when missing), each target for a few seconds; reports executions and crashes.
    /// Not part of `test`.
    Fuzz(fuzz::Args),
    /// Setup and build, then measure what the tracer costs on a netns node, against a baseline
    /// in the same run: 64-byte UDP pps, TCP throughput, a drop flood with capture exactness,
    /// start-up time, peak RSS (needs root). Writes DIR/bench.json and DIR/bench.md.
    Bench(bench::Args),
    /// Setup and build, then the container image (as root, no registry): a Debian root
    /// filesystem from mmdebstrap plus the release binary, written as an OCI archive with
    /// Docker's manifest.json (`podman load`, `ctr images import`, `docker load`), tagged
    /// `tracer:<version>`, at target/image/tracer-<version>.oci.tar; prints its path and size.
    Image(image::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Build => build::run().map(|_| ()),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Clippy => clippy::run(),
        Command::VmTest(args) => vm::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Image(args) => image::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
