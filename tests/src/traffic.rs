//! Traffic with exact counts, made by this process inside a pod's namespace (see `netns`).
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{netns, node::Pod, wait};

/// How often listener threads look at their stop flag.
const TICK: Duration = Duration::from_millis(20);

/// Outcome of repeated TCP connection attempts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectResults {
    /// Answered with a RST (ECONNREFUSED).
    pub refused: u64,
    pub connected: u64,
    pub timed_out: u64,
    pub other: u64,
}

impl Pod {
    /// Sends `count` UDP datagrams with `payload` from source port `sport` to `to`. Returns the
    /// number the kernel accepted; fails on the first send error.
    pub fn send_udp(&self, sport: u16, to: SocketAddrV4, count: usize, payload: &[u8]) -> Result<usize> {
        send_udp_in(&self.netns, self.addr(sport), to, count, payload)
    }

    /// [`Pod::send_udp`] from and to IPv6 addresses (a dual-stack node).
    pub fn send_udp6(&self, sport: u16, to: SocketAddrV6, count: usize, payload: &[u8]) -> Result<usize> {
        send_udp_in(&self.netns, self.addr6(sport), to, count, payload)
    }

    /// Tries `attempts` TCP connections to `to` (IPv4 or IPv6), each bounded by `timeout`, and
    /// sorts the outcomes. Connections that succeed are closed at once.
    pub fn tcp_connect(&self, to: impl Into<SocketAddr>, attempts: usize, timeout: Duration) -> Result<ConnectResults> {
        let to = to.into();
        netns::run(&self.netns, || {
            let mut r = ConnectResults::default();
            for _ in 0..attempts {
                match TcpStream::connect_timeout(&to, timeout) {
                    Ok(_) => r.connected += 1,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => r.refused += 1,
                    Err(e) if e.kind() == ErrorKind::TimedOut || e.kind() == ErrorKind::WouldBlock => r.timed_out += 1,
                    Err(_) => r.other += 1,
                }
            }
            Ok(r)
        })
    }

    /// Connects to `to`, writes `data`, closes. Fails if any step fails.
    pub fn send_tcp(&self, to: SocketAddrV4, data: &[u8], timeout: Duration) -> Result<()> {
        netns::run(&self.netns, || {
            let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout).with_context(|| format!("connect {to}"))?;
            s.set_write_timeout(Some(timeout))?;
            s.write_all(data).with_context(|| format!("write to {to}"))?;
            s.shutdown(std::net::Shutdown::Write)?;
            // Wait for the peer's close so every segment was delivered before we return.
            s.set_read_timeout(Some(timeout))?;
            let mut sink = [0u8; 64];
            while s.read(&mut sink).context("waiting for the peer to close")? > 0 {}
            Ok(())
        })
    }

    /// A UDP socket bound to `port` in this pod, handed to the caller (a socket stays in the
    /// namespace it was made in): e.g. one that nobody reads, to fill its receive buffer.
    pub fn udp_socket(&self, port: u16) -> Result<UdpSocket> {
        let addr = self.addr(port);
        netns::run(&self.netns, || UdpSocket::bind(addr).with_context(|| format!("bind {addr}")))
    }

    /// A UDP listener on `port` in this pod, counting datagrams until stopped.
    pub fn listen_udp(&self, port: u16) -> Result<UdpListener> {
        UdpListener::start(self, self.addr(port).into())
    }

    /// [`Pod::listen_udp`] on the pod's IPv6 address.
    pub fn listen_udp6(&self, port: u16) -> Result<UdpListener> {
        UdpListener::start(self, self.addr6(port).into())
    }

    /// A TCP listener on `port` in this pod, counting connections and bytes until stopped.
    pub fn listen_tcp(&self, port: u16) -> Result<TcpListener> {
        TcpListener::start(self, port)
    }
}

/// Sends `count` UDP datagrams from `from` to `to` inside the named namespace. Returns the
/// number the kernel accepted. EPERM is not an error: it is what a netfilter DROP on the
/// sender's own output path returns, and that packet was dropped (the kind of fault tests
/// plant); such sends are just not counted. Any other send error fails.
pub fn send_udp_in(netns_name: &str, from: impl Into<SocketAddr>, to: impl Into<SocketAddr>, count: usize, payload: &[u8]) -> Result<usize> {
    let (from, to) = (from.into(), to.into());
    netns::run(netns_name, || {
        let s = UdpSocket::bind(from).with_context(|| format!("bind {from}"))?;
        let mut accepted = 0;
        for i in 0..count {
            match s.send_to(payload, to) {
                Ok(_) => accepted += 1,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(anyhow!(e).context(format!("send #{i} to {to}"))),
            }
        }
        Ok(accepted)
    })
}

/// Receive buffer of the listeners: large enough that a burst a test sends never overflows
/// it (an overflow is a real drop, `SOCKET_RCVBUFF`, that would spoil a clean-traffic count).
const LISTENER_RCVBUF: libc::c_int = 16 * 1024 * 1024;

/// Sets `SO_RCVBUFFORCE` (root may exceed `net.core.rmem_max`).
fn force_rcvbuf(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<()> {
    let v = LISTENER_RCVBUF;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const v).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if r == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A thread in a pod receiving UDP datagrams.
pub struct UdpListener {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl UdpListener {
    fn start(pod: &Pod, at: SocketAddr) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s2, r2) = (stop.clone(), received.clone());
        let thread = netns::spawn(&pod.netns, move || {
            let bound = UdpSocket::bind(at)
                .and_then(|s| s.set_read_timeout(Some(TICK)).map(|()| s))
                .and_then(|s| force_rcvbuf(&s).map(|()| s));
            let s = match bound {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("bind {at}: {e}")));
                    return Ok(());
                }
            };
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::Relaxed) {
                match s.recv_from(&mut buf) {
                    Ok(_) => {
                        r2.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                    Err(e) => return Err(anyhow!("recv on {at}: {e}")),
                }
            }
            Ok(())
        })?;
        let l = Self { stop, received, thread: Some(thread) };
        match rx.recv_timeout(Duration::from_mins(1)) {
            Ok(Ok(())) => Ok(l),
            Ok(Err(e)) => Err(anyhow!(e)),
            Err(_) => {
                l.stop.store(true, Ordering::Relaxed);
                bail!("UDP listener on {at} did not start")
            }
        }
    }

    #[must_use]
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` datagrams arrived (bounded by `timeout`).
    pub fn wait_for(&self, n: u64, timeout: Duration) -> Result<u64> {
        wait::until(&format!("{n} UDP datagrams"), timeout, Duration::from_millis(5), || {
            let got = self.received();
            Ok((got >= n).then_some(got))
        })
        .with_context(|| format!("received {}", self.received()))
    }

    /// Stops the thread and returns the final count.
    pub fn stop(mut self) -> Result<u64> {
        self.shutdown()?;
        Ok(self.received())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("UDP listener thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for UdpListener {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A thread in a pod accepting TCP connections and reading them to the end.
pub struct TcpListener {
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl TcpListener {
    fn start(pod: &Pod, port: u16) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (s2, c2, b2, ip) = (stop.clone(), connections.clone(), bytes.clone(), pod.ip);
        let thread = netns::spawn(&pod.netns, move || {
            let bound = std::net::TcpListener::bind(SocketAddrV4::new(ip, port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .and_then(|l| force_rcvbuf(&l).map(|()| l));
            let l = match bound {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("listen {ip}:{port}: {e}")));
                    return Ok(());
                }
            };
            while !s2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        c2.fetch_add(1, Ordering::Relaxed);
                        conn.set_nonblocking(false)?;
                        conn.set_read_timeout(Some(Duration::from_mins(1)))?;
                        let mut buf = [0u8; 16384];
                        loop {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    b2.fetch_add(n as u64, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => return Err(anyhow!("accept on {ip}:{port}: {e}")),
                }
            }
            Ok(())
        })?;
        let l = Self { stop, connections, bytes, thread: Some(thread) };
        match rx.recv_timeout(Duration::from_mins(1)) {
            Ok(Ok(())) => Ok(l),
            Ok(Err(e)) => Err(anyhow!(e)),
            Err(_) => {
                l.stop.store(true, Ordering::Relaxed);
                bail!("TCP listener on {ip}:{port} did not start", ip = pod.ip)
            }
        }
    }

    #[must_use]
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stops the thread; returns (connections, bytes).
    pub fn stop(mut self) -> Result<(u64, u64)> {
        self.shutdown()?;
        Ok((self.connections(), self.bytes()))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("TCP listener thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
