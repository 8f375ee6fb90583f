//! `tracer merge` options.
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// Capture directories, bundle directories, bundle archives or watch dumps (.tar.zst).
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,

    /// The directory to write (new or empty).
    #[arg(short = 'o', long, value_name = "DIR")]
    pub output: PathBuf,
}
