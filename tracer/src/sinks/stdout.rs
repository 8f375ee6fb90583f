//! A line per drop on stdout (tcpdump-like), and each followed packet's timeline when its path
//! ends; unless `--quiet` or the JSON goes to stdout.
use std::io::Write as _;

use anyhow::Result;

use crate::model::{drop::DropRecord, path::Finished, render};

pub struct StdoutLines;

impl super::Sink for StdoutLines {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn drop_event(&mut self, d: &DropRecord) -> Result<()> {
        // A closed stdout (`| head`) must not stop the capture: lines are best effort.
        let _ = writeln!(std::io::stdout().lock(), "{}", render::drop_line(&d.event));
        Ok(())
    }

    fn packet(&mut self, p: &Finished) -> Result<()> {
        let _ = write!(std::io::stdout().lock(), "{}", render::timeline(&p.record));
        Ok(())
    }
}
