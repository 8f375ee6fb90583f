//! `tracer report` options.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Capture directories, bundle directories or bundle archives (.tar.zst).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,

    /// The HTML page to write.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,

    /// Also write the page's text sections as Markdown to FILE.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,

    /// The page's title [default: Packet drops on NODE…].
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}
