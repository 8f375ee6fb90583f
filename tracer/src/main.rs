//! `tracer`: where a Kubernetes pod's packets die on a node.

use clap::Parser as _;
use tracer::{cli, doctor, session};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        cli::Command::Capture(args) => run_async(session::capture(args)),
        cli::Command::Doctor(args) => return std::process::ExitCode::from(doctor::run(&args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: what went wrong and, in the message itself, what to do.
            eprintln!("tracer: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fut)
}
