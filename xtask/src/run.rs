//! `cargo xtask run -- ARGS`: setup, build, then become `target/release/tracer ARGS`. exec
//! (not spawn) so Ctrl-C/SIGTERM reach the tracer directly and its exit code is ours.
use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::{Result, anyhow};

use crate::{build, cmd};

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for `tracer`, e.g. `capture --duration 30s --pcap drops.pcapng udp port 53`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "TRACER_ARGS"
    )]
    args: Vec<OsString>,
}

pub fn run(args: &Args) -> Result<()> {
    let bin = build::run()?;
    let mut c = Command::new(&bin);
    // The user's working directory stays: relative --pcap/--json paths land where they expect.
    c.args(&args.args);
    cmd::step(format!("run: {}", cmd::display(&c)));
    let err = c.exec();
    Err(anyhow!("cannot run {}: {err}", bin.display()))
}
