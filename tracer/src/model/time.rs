//! Kernel time (`bpf_ktime_get_ns()`, `CLOCK_MONOTONIC`) to wall-clock time, and the RFC 3339
//! form every record uses.
use std::time::{Duration, SystemTime};

/// Converts `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) to wall-clock time.
#[derive(Clone, Copy)]
pub struct Clock {
    realtime_minus_mono_ns: i128,
}

impl Clock {
    #[expect(clippy::new_without_default, reason = "new() samples the system clocks: not a default value")]
    pub fn new() -> Self {
        let ts = |clock| {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: valid pointer to a timespec.
            unsafe { libc::clock_gettime(clock, &raw mut t) };
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        };
        let mono = ts(libc::CLOCK_MONOTONIC);
        let real = ts(libc::CLOCK_REALTIME);
        Self { realtime_minus_mono_ns: real - mono }
    }

    /// Nanoseconds since the Unix epoch.
    pub fn wall(&self, mono_ns: u64) -> Duration {
        let ns = (i128::from(mono_ns) + self.realtime_minus_mono_ns).max(0);
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

pub fn rfc3339(since_epoch: Duration) -> String {
    humantime::format_rfc3339_nanos(SystemTime::UNIX_EPOCH + since_epoch).to_string()
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of the kernel's event times.
pub fn mono_now() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) };
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}
