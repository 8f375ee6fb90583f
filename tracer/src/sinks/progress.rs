//! Progress on stderr while capturing: a rewritten line on a terminal, a line every few
//! seconds otherwise (logs stay readable).
use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

pub struct Progress {
    tty: bool,
    last: Instant,
    last_drops: u64,
    every: Duration,
}

impl Progress {
    #[expect(clippy::new_without_default, reason = "new() probes the terminal and starts the clock: not a default value")]
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        Self { tty, last: Instant::now(), last_drops: 0, every: if tty { Duration::from_secs(1) } else { Duration::from_secs(5) } }
    }

    pub fn tick(&mut self, drops: u64, lost: u64) {
        let dt = self.last.elapsed();
        if dt < self.every {
            return;
        }
        #[expect(clippy::cast_precision_loss, reason = "a drop count far below 2^52, for display")]
        let rate = (drops.saturating_sub(self.last_drops)) as f64 / dt.as_secs_f64();
        self.last = Instant::now();
        self.last_drops = drops;
        let line = format!("{drops} drops ({rate:.0}/s), {lost} lost");
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(e, "{line}");
        }
    }

    pub fn finish(&self) {
        if self.tty {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
