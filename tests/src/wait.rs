//! Bounded waiting: every loop in the testbed ends, with an error naming what did not happen.
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Polls `f` every `every` until it returns `Some`, or fails after `timeout` naming `what`.
pub fn until<T>(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}
