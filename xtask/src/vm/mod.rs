//! `cargo xtask vm-test`: the integration tests inside other kernels. For each chosen kernel
//! series it takes Debian's cloud kernel package, builds an initramfs (busybox init, the host's
//! networking tools, the kernel's netfilter/tc/veth modules, the release tracer, the test
//! executables), boots it with QEMU (TCG), runs every test binary one test at a time, and reports
//! per kernel: tests passed/failed/skipped with reasons, what BPF the kernel allows, which drop
//! probe the tracer picked, timings. Exits non-zero unless every kernel's run is green.
//!
//! Everything is cached under `target/vm/`: package lists and downloads, unpacked kernels,
//! stripped binaries, per kernel `initrd.img`, `console.log`, `results.log`; `report.json`
//! holds the last run's reports.
mod apt;
mod boot;
mod guest;
mod host_only;
mod initramfs;
mod kernel;
mod modules;
mod payload;
mod qemu;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::{
    build,
    cmd::{self, step},
    setup,
};

#[derive(clap::Args)]
pub struct Args {
    /// Kernel series: 6.1 (bookworm), 6.12 (bookworm-backports / trixie), or all.
    #[arg(long, value_enum, default_value = "all")]
    kernel: kernel::Choice,
    /// Run only tests whose name contains FILTER (libtest's filter, applied to every test binary).
    #[arg(long = "test", value_name = "FILTER")]
    test: Option<String>,
    /// Run every test binary this many times in each guest (to catch flaky tests).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Run failed tests again, alone, up to this many times; one that then passes is reported
    /// as FLAKY (with its first failure) and does not fail the run. 0: every failure counts.
    #[arg(long, default_value_t = 1)]
    retries: u32,
    /// Bound on one guest (boot, tests, power-off), in minutes. The 6.12 guest with the host
    /// under --cpu-hog took 29 min on 2026-12-04 at 17:57 and about 48-53 min per run of its
    /// tests the same evening (a slower machine that day); with the host's tests before it
    /// (15 min hogged), 70 stays inside CI's 90-minute limit.
    #[arg(long, default_value_t = 70)]
    timeout_min: u64,
    /// Do not echo the guests' serial consoles (they are still written to target/vm/<kernel>/console.log).
    #[arg(long)]
    quiet_console: bool,
    /// Boot the guests with one busy host thread pinned to each CPU (a slow machine on purpose).
    #[arg(long)]
    cpu_hog: bool,
    /// How many guests run at once. A guest keeps about one host CPU busy and waits the rest
    /// of the time, so two at once take less time in all than one after the other.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: u64,
}

/// Kernel options worth seeing next to the probes.
const CONFIG_FACTS: &[&str] = &[
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_DEBUG_INFO_BTF_MODULES",
    "CONFIG_KPROBES",
    "CONFIG_KPROBE_EVENTS",
    "CONFIG_FUNCTION_TRACER",
    "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
    "CONFIG_NETFILTER_BPF_LINK",
    "CONFIG_NET_XGRESS",
    "CONFIG_NET_CLS_ACT",
];

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    setup::run()?;
    let work = cmd::target_dir()?.join("vm");
    std::fs::create_dir_all(&work)?;
    qemu::ensure(&work)?;
    let tracer = build::release_binary()?;
    let payload = payload::build(&work, &tracer)?;
    step(format!(
        "vm: {} tests whose outcome does not depend on the kernel run on the host only (xtask/src/vm/host_only.rs)",
        host_only::HOST_ONLY.len()
    ));

    let hog = args.cpu_hog.then(crate::hog::Hog::start);
    // Kernels are fetched one at a time (one apt configuration); the guests then boot
    // `--jobs` at a time: each keeps about one host CPU busy, waits for the rest.
    let kernels = args
        .kernel
        .series()
        .into_iter()
        .map(|series| Ok((series, kernel::fetch(&work, series)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut reports = Vec::new();
    for batch in kernels.chunks(usize::try_from(args.jobs).unwrap_or(usize::MAX)) {
        let done = std::thread::scope(|scope| {
            let runs: Vec<_> = batch
                .iter()
                .map(|(series, k)| {
                    let payload = &payload;
                    let work = &work;
                    scope.spawn(move || one_guest(args, work, payload, *series, k))
                })
                .collect();
            runs.into_iter()
                .map(|r| r.join().unwrap_or_else(|_| bail!("a guest's thread panicked")))
                .collect::<Vec<_>>()
        });
        for rep in done {
            let rep = rep?;
            eprint!("{}", rep.render());
            reports.push(rep);
        }
    }

    drop(hog);
    let json = serde_json::Value::Array(reports.iter().map(report::Report::to_json).collect());
    std::fs::write(
        work.join("report.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    step(format!(
        "vm-test: summary ({:.0} s in all; details in {})",
        start.elapsed().as_secs_f64(),
        work.join("report.json").display()
    ));
    let mut failed = Vec::new();
    for r in &reports {
        let problems = r.problems();
        step(format!(
            "  {:<5} {}  {} passed, {} failed, {} skipped, {} flaky  guest {:.0} s",
            r.series,
            if problems.is_empty() { "PASS" } else { "FAIL" },
            r.count(|o| *o == report::Outcome::Passed),
            r.count(|o| *o == report::Outcome::Failed),
            r.count(|o| matches!(o, report::Outcome::Skipped(_))),
            r.count(|o| *o == report::Outcome::Flaky),
            r.wall_s
        ));
        if !problems.is_empty() {
            failed.push(format!("{}: {}", r.series, problems.join("; ")));
        }
    }
    if !failed.is_empty() {
        bail!("vm-test failed on {}", failed.join(" | "));
    }
    Ok(())
}

/// Builds one kernel's initramfs, boots it and reads its report.
fn one_guest(
    args: &Args,
    work: &std::path::Path,
    payload: &payload::Payload,
    series: kernel::Series,
    k: &kernel::Kernel,
) -> Result<report::Report> {
    let dir = work.join(series.name());
    std::fs::create_dir_all(&dir)?;
    let t0 = Instant::now();
    let (tree, modules) = guest::tree(&guest::Options {
        kernel: k,
        payload,
        filter: args.test.as_deref(),
        repeat: args.repeat,
        retries: args.retries,
        dir: &dir,
    })?;
    let initrd = dir.join("initrd.img");
    let (raw, packed) = tree.write_gzip(&initrd)?;
    let build_s = t0.elapsed().as_secs_f64();
    step(format!(
        "vm: {} {} ({}): initramfs {} MiB ({} MiB gzip, {modules} modules) in {build_s:.1} s; booting",
        k.package,
        k.version,
        k.release,
        raw >> 20,
        packed >> 20
    ));
    let guest = boot::Boot {
        label: series.name(),
        kernel: &k.vmlinuz,
        initrd: &initrd,
        dir: &dir,
        timeout: Duration::from_mins(args.timeout_min),
        echo_console: !args.quiet_console,
    }
    .run()?;
    Ok(report::Report {
        series: series.name().into(),
        package: k.package.clone(),
        version: k.version.clone(),
        config: kernel::config_facts(k, CONFIG_FACTS)?,
        filter: args.test.clone(),
        build_s,
        wall_s: guest.wall.as_secs_f64(),
        qemu_cpu_s: guest.cpu.as_secs_f64(),
        timed_out: guest.timed_out,
        qemu_status: guest.status.clone(),
        alerts: alerts(&guest.console),
        results: report::parse(&guest.results),
    })
}

/// Console lines that mean the guest kernel itself went wrong.
fn alerts(console: &str) -> Vec<String> {
    console
        .lines()
        .filter(|l| {
            [
                "Kernel panic",
                "Oops:",
                "BUG:",
                "general protection fault",
                "double fault",
            ]
            .iter()
            .any(|m| l.contains(m))
        })
        .map(|l| l.trim().to_string())
        .take(20)
        .collect()
}
