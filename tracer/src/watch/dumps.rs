//! When dumps happen: a request (trigger, SIGUSR1, `POST /dump`) is accepted unless its
//! trigger dumped less than `--dump-interval` ago; the dump is written `--after` later, on a
//! thread of its own (at most [`MAX_WRITERS`] at once), from the recorder's window. Results
//! come back to the loop, which counts them (`tracer_dumps_total`, `tracer_dump_failures_total`).
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{
    counts::Counts,
    dump::{self, Job},
    metrics::Metrics,
    recorder::Recorder,
};
use crate::args::CaptureArgs;

/// Dumps written at the same time at most; more wait for a writer.
const MAX_WRITERS: usize = 2;
/// How long past its due time a dump waits for drops of its window not yet read from the
/// ring or still waiting for their netfilter rule.
const HELD_GRACE: Duration = Duration::from_secs(30);
/// Dumps accepted but not yet written at most.
const MAX_QUEUED: usize = 16;

/// How far the pipeline is (wall times): every drop before `caught_up` has been read from the
/// ring into it (None: all of them), and the oldest still waits for its rule (`held`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub caught_up: Option<Duration>,
    pub held: Option<Duration>,
}

struct Queued {
    name: String,
    trigger: String,
    fired: Duration,
    due: Instant,
}

/// What a dump needs that does not change during the run.
pub struct Settings {
    pub dir: PathBuf,
    pub after: Duration,
    pub interval: Duration,
    pub keep: Duration,
    pub max: usize,
    pub node: String,
    pub probe: String,
    pub args: CaptureArgs,
}

pub struct Dumps {
    pub settings: Settings,
    seq: u64,
    last: HashMap<String, Instant>,
    queued: Vec<Queued>,
    writers: usize,
    done_tx: mpsc::Sender<(String, String, anyhow::Result<PathBuf>)>,
    done_rx: mpsc::Receiver<(String, String, anyhow::Result<PathBuf>)>,
}

impl Dumps {
    pub fn new(settings: Settings) -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Self { settings, seq: 0, last: HashMap::new(), queued: Vec::new(), writers: 0, done_tx, done_rx }
    }

    /// Whether `trigger` may dump now.
    pub fn armed(&self, trigger: &str) -> bool {
        self.last.get(trigger).is_none_or(|t| t.elapsed() >= self.settings.interval)
    }

    /// Accepts a dump: its future path, or (HTTP status, why) when refused.
    pub fn request(&mut self, trigger: &str, wall: Duration) -> Result<PathBuf, (u16, String)> {
        if let Some(t) = self.last.get(trigger)
            && t.elapsed() < self.settings.interval
        {
            let wait = self.settings.interval.saturating_sub(t.elapsed());
            return Err((429, format!("trigger {trigger:?} dumped {}s ago; --dump-interval allows the next in {}s", t.elapsed().as_secs(), wait.as_secs() + 1)));
        }
        if self.queued.len() >= MAX_QUEUED {
            return Err((503, "too many dumps waiting to be written; try again later".into()));
        }
        self.seq += 1;
        let name = dump::name(wall, self.seq, trigger);
        let path = dump::archive_path(&self.settings.dir, &name);
        self.last.insert(trigger.to_string(), Instant::now());
        self.queued.push(Queued { name, trigger: trigger.to_string(), fired: wall, due: Instant::now() + self.settings.after });
        Ok(path)
    }

    /// Starts the dumps that are due and whose drops have all reached the recorder: read from
    /// the ring past the window's end, and none of the window still waiting for its netfilter
    /// rule (`pipeline`). `force`: the run ended, every queued dump starts now.
    pub fn start_due(&mut self, recorder: &Recorder, counts: &Counts, wall: Duration, pipeline: Progress, force: bool) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.queued.len() {
            let q = &self.queued[i];
            let window_end = q.fired + self.settings.after;
            // A drop of the window not yet read from the ring, or still waiting for its rule:
            // wait too, boundedly.
            let read = pipeline.caught_up.is_none_or(|c| c >= window_end);
            let complete = (read && pipeline.held.is_none_or(|h| h > window_end)) || now >= q.due + HELD_GRACE;
            if self.writers >= MAX_WRITERS || !(force || (q.due <= now && complete)) {
                i += 1;
                continue;
            }
            let q = self.queued.remove(i);
            let from = q.fired.saturating_sub(self.settings.keep);
            let to = (q.fired + self.settings.after).min(wall);
            let records = recorder.lock().window(from, to);
            let s = &self.settings;
            let job = Job {
                name: q.name.clone(),
                trigger: q.trigger.clone(),
                fired: q.fired,
                from,
                to,
                records,
                totals: counts.window(from, to),
                node: s.node.clone(),
                probe: s.probe.clone(),
                args: s.args.clone(),
            };
            let (dir, max, tx) = (s.dir.clone(), s.max, self.done_tx.clone());
            let trigger = q.trigger;
            let spawned = std::thread::Builder::new().name("tracer-dump".into()).spawn(move || {
                let r = dump::write(&job, &dir, max);
                let _ = tx.send((trigger, q.name, r));
            });
            match spawned {
                Ok(_) => self.writers += 1,
                Err(e) => eprintln!("tracer: error: cannot start a dump writer: {e}; that dump is skipped, watching goes on"),
            }
        }
    }

    /// Counts finished dumps; logs each.
    pub fn collect(&mut self, m: &mut Metrics, wait: bool) {
        loop {
            let got = if wait && self.writers > 0 { self.done_rx.recv().ok() } else { self.done_rx.try_recv().ok() };
            let Some((trigger, name, result)) = got else { break };
            self.writers -= 1;
            match result {
                Ok(path) => {
                    *m.dumps.entry(trigger).or_default() += 1;
                    eprintln!("tracer: dump written: {}", path.display());
                }
                Err(e) => {
                    *m.dump_failures.entry(trigger).or_default() += 1;
                    eprintln!("tracer: error: dump {name} failed: {e:#}; nothing of it is kept, watching goes on");
                }
            }
        }
    }

    pub fn busy(&self) -> bool {
        self.writers > 0 || !self.queued.is_empty()
    }
}
