//! `--json FILE|-`: one JSON object per line.
use std::{
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

pub struct JsonLines {
    out: BufWriter<Box<dyn Write>>,
    name: String,
}

impl JsonLines {
    pub fn create(path: &Path) -> Result<Self> {
        let (w, name): (Box<dyn Write>, _) = if path.as_os_str() == "-" {
            (Box::new(std::io::stdout()), "stdout".to_string())
        } else {
            (Box::new(super::create(path)?), path.display().to_string())
        };
        Ok(Self { out: BufWriter::with_capacity(256 * 1024, w), name })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, record).with_context(|| format!("cannot write {}", self.name))?;
        self.out.write_all(b"\n").with_context(|| format!("cannot write {}", self.name))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("cannot write {}", self.name))
    }
}
