//! `--bundle DIR` as the last output: at the end it takes the node's state again and packs
//! the capture's files with it (see `crate::bundle`).
use anyhow::Result;

use super::summary::RunEnd;
use crate::{args::CaptureArgs, bundle::Bundle};

pub struct BundleSink {
    bundle: Option<Bundle>,
    args: CaptureArgs,
}

impl BundleSink {
    pub fn new(bundle: Bundle, args: CaptureArgs) -> Self {
        Self { bundle: Some(bundle), args }
    }
}

impl super::Sink for BundleSink {
    fn name(&self) -> &'static str {
        "bundle"
    }

    fn drop_event(&mut self, _d: &crate::model::drop::DropRecord) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, end: &RunEnd) -> Result<()> {
        let Some(b) = self.bundle.take() else { return Ok(()) };
        let dir = b.dir().to_path_buf();
        let archive = b.finish(&self.args, &end.meta.probe)?;
        eprintln!("tracer: bundle in {} and {}", dir.display(), archive.display());
        Ok(())
    }
}
