//! `tracer`: where a Kubernetes pod's packets die on a node.

use clap::Parser as _;
use tracer::{cli, doctor, floor, merge, report, session, watch};

fn main() -> std::process::ExitCode {
    install_panic_hook();
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match cli.command {
        cli::Command::Capture(args) => run_async(session::capture(args)),
        cli::Command::Watch(args) => run_async(watch::run(args)),
        cli::Command::Doctor(args) => return std::process::ExitCode::from(doctor::run(&args)),
        cli::Command::Report(args) => report::run(&args),
        cli::Command::Merge(args) => merge::run(&args),
        cli::Command::Floor(args) => floor::run(&args),
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

/// A bad command line is one line too (clap's own message, folded), exit status 2; help and
/// version go to stdout as clap prints them.
fn usage_error(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        e.exit();
    }
    eprintln!("tracer: error: {}; see `tracer --help`", fold_clap_message(&e.render().to_string()));
    std::process::ExitCode::from(2)
}

/// clap's multi-line error without its usage block, on one line.
fn fold_clap_message(text: &str) -> String {
    let body = text.split("\nUsage:").next().unwrap_or(text);
    let parts: Vec<&str> = body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("For more information")).collect();
    let mut joined = String::new();
    for p in parts {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with(':') { " " } else { "; " });
        }
        joined.push_str(p);
    }
    joined.strip_prefix("error: ").unwrap_or(&joined).trim_end_matches(['.', ' ']).to_string()
}

/// A panic prints one clear line (and the backtrace only with `RUST_BACKTRACE`); the unwinding
/// that follows drops every attachment (tc filters included) and flushes the outputs' whole
/// records, and the process exits with status 101.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("tracer: error: internal error (panic{at}): {msg}; probes are detached on the way out; please report this with the output of -vv");
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fut)
}
