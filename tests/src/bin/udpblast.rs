//! `udpblast`: a bounded UDP packet-rate tool for `cargo xtask bench`.
//!   `udpblast send --netns NS --cpu 0 --from IP:PORT --to IP:PORT [--size 64] [--seconds S] [--packets N]`
//!   `udpblast recv --netns NS --cpu 1 --bind IP:PORT [--seconds S] [--idle-ms MS]`
//! `send` uses `sendmmsg` on a connected socket until either bound is reached and prints one JSON
//! object (`sent`, `errors`, `seconds`). `recv` prints `ready` once bound, counts datagrams with
//! `recvmmsg` until SIGINT/SIGTERM, `--seconds`, or `--idle-ms` without a datagram after the
//! first, then prints one JSON object (`received`, `seconds` from first to last datagram).
//! Both enter the namespace and pin themselves before doing anything, so the caller needs no
//! `ip netns exec`/`taskset` between it and the counts.
use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};

static STOP: AtomicBool = AtomicBool::new(false);

/// Largest batch for one `sendmmsg`/`recvmmsg` call.
const MAX_BATCH: usize = 1024;
/// Receive buffer: a short stall of the receiver must not turn into drops.
const RCVBUF: libc::c_int = 32 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(about = "Bounded UDP sender/receiver with sendmmsg/recvmmsg (for cargo xtask bench)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send datagrams until --seconds or --packets, whichever comes first.
    Send(SendArgs),
    /// Count datagrams until a signal, --seconds, or --idle-ms of silence after the first.
    Recv(RecvArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Network namespace to work in: a name under /var/run/netns or a path.
    #[arg(long)]
    netns: Option<String>,
    /// CPU to pin to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Datagrams per system call.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
}

#[derive(Args, Debug)]
struct SendArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    from: SocketAddrV4,
    #[arg(long)]
    to: SocketAddrV4,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1472))]
    size: u16,
    /// Time bound.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Packet bound (0: none).
    #[arg(long, default_value_t = 0)]
    packets: u64,
}

#[derive(Args, Debug)]
struct RecvArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long)]
    bind: SocketAddrV4,
    /// Time bound.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Stop after this long without a datagram, once one arrived.
    #[arg(long, default_value_t = 500)]
    idle_ms: u64,
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udpblast: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    match cli.command {
        Command::Send(a) => {
            prepare(&a.common)?;
            send(&a)
        }
        Command::Recv(a) => {
            prepare(&a.common)?;
            recv(&a)
        }
    }
}

/// Namespace first (single-threaded process: the whole process moves), then the CPU.
fn prepare(c: &Common) -> Result<()> {
    if let Some(ns) = &c.netns {
        let path = if ns.contains('/') { PathBuf::from(ns) } else { integration_tests::netns::path(ns) };
        integration_tests::netns::enter(&path)?;
    }
    if let Some(cpu) = c.cpu {
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays inside it for cpu < CPU_SETSIZE.
        let r = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if cpu >= libc::CPU_SETSIZE as usize {
                bail!("--cpu {cpu} is out of range");
            }
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
        };
        if r != 0 {
            bail!("cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn send(args: &SendArgs) -> Result<()> {
    let sock = UdpSocket::bind(args.from).with_context(|| format!("bind {}", args.from))?;
    sock.connect(args.to).with_context(|| format!("connect {}", args.to))?;
    let mut payload = vec![0u8; usize::from(args.size)];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = u8::try_from(i % 251).unwrap_or(0);
    }
    let batch = usize::from(args.common.batch).min(MAX_BATCH);
    // SAFETY: iovec/mmsghdr are plain C structs; zeroed is a valid start.
    let mut iov: libc::iovec = unsafe { std::mem::zeroed() };
    iov.iov_base = payload.as_mut_ptr().cast();
    iov.iov_len = payload.len();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &raw mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let limit = if args.packets == 0 { u64::MAX } else { args.packets };
    let bound = Duration::from_secs_f64(args.seconds.max(0.0));
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    while sent < limit && !STOP.load(Ordering::Relaxed) && start.elapsed() < bound {
        let n = usize::try_from((limit - sent).min(batch as u64)).unwrap_or(batch);
        // SAFETY: `msgs` holds `batch` ≥ n initialised headers pointing at `payload`, alive here.
        let r = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), u32::try_from(n)?, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                // Refused by the kernel on our own path (ENOBUFS, a netfilter EPERM, …): the
                // datagram is gone; count it and go on, the time bound still ends the run.
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EPERM | libc::ECONNREFUSED) => errors += 1,
                _ => bail!("sendmmsg to {}: {e}", args.to),
            }
        } else {
            sent += u64::try_from(r)?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({ "sent": sent, "errors": errors, "seconds": seconds }));
    Ok(())
}

fn recv(args: &RecvArgs) -> Result<()> {
    let sock = UdpSocket::bind(args.bind).with_context(|| format!("bind {}", args.bind))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let v = RCVBUF;
    // SAFETY: a valid socket and a c_int option value of the right size (root may exceed rmem_max).
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const v).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())?,
        )
    };
    if r != 0 {
        bail!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    }
    let batch = usize::from(args.common.batch).min(MAX_BATCH);
    let mut bufs = vec![[0u8; 2048]; batch];
    // SAFETY: plain C structs; zeroed is a valid start.
    let mut iovs: Vec<libc::iovec> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for ((iov, buf), m) in iovs.iter_mut().zip(bufs.iter_mut()).zip(msgs.iter_mut()) {
        iov.iov_base = buf.as_mut_ptr().cast();
        iov.iov_len = buf.len();
        m.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        m.msg_hdr.msg_iovlen = 1;
    }
    println!("ready");
    let bound = Duration::from_secs_f64(args.seconds.max(0.0));
    let idle = Duration::from_millis(args.idle_ms);
    let start = Instant::now();
    let mut received = 0u64;
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    while !STOP.load(Ordering::Relaxed) && start.elapsed() < bound {
        if last.is_some_and(|l| l.elapsed() >= idle) {
            break;
        }
        // SAFETY: `msgs` holds `batch` headers pointing at buffers that live for this call.
        let r = unsafe {
            libc::recvmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), u32::try_from(batch)?, libc::MSG_WAITFORONE, std::ptr::null_mut())
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                _ => bail!("recvmmsg on {}: {e}", args.bind),
            }
        }
        if r == 0 {
            continue;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = Some(now);
        received += u64::try_from(r)?;
    }
    let seconds = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    println!("{}", serde_json::json!({ "received": received, "seconds": seconds }));
    Ok(())
}
