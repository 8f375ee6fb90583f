//! A real headless Chromium, with no network at all (a fresh network namespace: no routes, not
//! even a loopback that is up), renders the page: the DOM after scripts ran, a screenshot, and
//! Chromium's own net log, which lists every request the page made.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use integration_tests::{TempDir, cmd};

/// Bound on one Chromium run (start-up is slow on a loaded machine).
const TIMEOUT: Duration = Duration::from_mins(2);

pub struct Rendered {
    pub dom: String,
    pub png: PathBuf,
    /// URLs the net log saw requested (the page's own file:// aside).
    pub requests: Vec<String>,
    _dir: TempDir,
}

/// `chromium` on PATH, else None (the caller skips, saying so).
pub fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("chromium")).find(|p| p.is_file()))
}

fn run(bin: &Path, profile: &Path, extra: &[String], page: &Path) -> String {
    let mut c = Command::new("unshare");
    c.arg("-n").arg("--").arg(bin);
    c.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--disable-extensions", "--disable-background-networking"]);
    c.arg(format!("--user-data-dir={}", profile.display()));
    c.args(extra);
    c.arg(format!("file://{}", page.display()));
    let out = cmd::output(&mut c, None, TIMEOUT).unwrap_or_else(|e| panic!("chromium: {e:#}"));
    assert!(out.status.success(), "chromium failed ({}): {}", out.status, out.stderr);
    out.stdout
}

/// Renders `page` twice (DOM with the net log, then the screenshot) in a namespace without
/// network.
pub fn render(bin: &Path, page: &Path) -> Rendered {
    let dir = TempDir::new("report-chromium").unwrap();
    let netlog = dir.join("netlog.json");
    let dom = run(bin, &dir.join("profile"), &["--dump-dom".into(), format!("--log-net-log={}", netlog.display()), "--net-log-capture-mode=Everything".into()], page);
    let png = dir.join("shot.png");
    run(bin, &dir.join("profile2"), &[format!("--screenshot={}", png.display()), "--window-size=1280,2000".into()], page);
    let log = std::fs::read_to_string(&netlog).unwrap_or_else(|e| panic!("no net log at {}: {e}", netlog.display()));
    Rendered { dom, png, requests: page_requests(&log), _dir: dir }
}

/// URLs the page itself asked for: `URL_REQUEST_START_JOB` events whose network isolation key
/// is the page's (`file://`). The browser's own background requests (component updater) carry
/// a `null` key and are not the page's doing.
fn page_requests(log: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(log).unwrap_or_else(|e| panic!("the net log is not JSON: {e}"));
    let Some(start_job) = v["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64() else { panic!("the net log names no URL_REQUEST_START_JOB") };
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"].as_u64() == Some(start_job))
        .filter(|e| e["params"]["network_isolation_key"].as_str().is_some_and(|k| k.contains("file://")))
        .filter_map(|e| e["params"]["url"].as_str())
        .filter(|u| !u.starts_with("file:"))
        .map(str::to_string)
        .collect()
}

/// Decodes the PNG: (width, height, distinct colours, share of non-white pixels).
#[expect(clippy::cast_precision_loss, reason = "a share of pixels")]
pub fn picture(png_path: &Path) -> (u32, u32, usize, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bpp = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut ink = 0usize;
    let px = buf[..info.buffer_size()].chunks(bpp);
    let total = px.len();
    for p in px {
        let rgb = [p[0], p[1.min(bpp - 1)], p[2.min(bpp - 1)]];
        if rgb != [255, 255, 255] {
            ink += 1;
        }
        colours.insert(rgb);
    }
    (info.width, info.height, colours.len(), ink as f64 / total.max(1) as f64)
}
