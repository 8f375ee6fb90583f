//! Hand-made TCP segments from a pod: what a socket would never send (a segment far outside
//! its connection's window), through a raw socket so the kernel adds only the IP header.
use std::net::{SocketAddr, SocketAddrV4, TcpStream};

use anyhow::{Context as _, Result, bail};

use crate::{netns, node::Pod};

/// TCP `ACK` flag.
pub const ACK: u8 = 0x10;

impl Pod {
    /// An open TCP connection from this pod to `to` (a listener there accepted it); it stays
    /// open while the stream lives.
    pub fn tcp_open(&self, to: SocketAddrV4, timeout: std::time::Duration) -> Result<TcpStream> {
        netns::run(&self.netns, || TcpStream::connect_timeout(&SocketAddr::V4(to), timeout).with_context(|| format!("connect {to}")))
    }

    /// Sends `count` bare TCP segments `from` → `to` with these sequence and acknowledgement
    /// numbers and flags. Returns how many the kernel accepted.
    pub fn send_tcp_segments(&self, from: SocketAddrV4, to: SocketAddrV4, (seq, ack): (u32, u32), flags: u8, count: usize) -> Result<usize> {
        let segment = segment(from, to, seq, ack, flags);
        netns::run(&self.netns, || {
            // SAFETY: plain socket(2); the fd is closed below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
            if fd < 0 {
                bail!("raw socket: {}", std::io::Error::last_os_error());
            }
            let dst = libc::sockaddr_in { sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2), sin_port: 0, sin_addr: libc::in_addr { s_addr: u32::from(*to.ip()).to_be() }, sin_zero: [0; 8] };
            let mut sent = 0;
            for _ in 0..count {
                // SAFETY: a valid fd, buffer and address of the sizes given.
                let n = unsafe {
                    libc::sendto(fd, segment.as_ptr().cast(), segment.len(), 0, (&raw const dst).cast(), libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(16))
                };
                if n == isize::try_from(segment.len()).unwrap_or(-1) {
                    sent += 1;
                }
            }
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            Ok(sent)
        })
    }
}

/// The next sequence numbers of an open connection: (to send, expected from the peer), read
/// in the socket's repair mode (`TCP_REPAIR`, root), left without a window probe.
pub fn tcp_seqs(stream: &TcpStream) -> Result<(u32, u32)> {
    use std::os::fd::AsRawFd as _;
    const TCP_RECV_QUEUE: libc::c_int = 1;
    const TCP_SEND_QUEUE: libc::c_int = 2;
    const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;
    let fd = stream.as_raw_fd();
    let set = |opt: libc::c_int, v: libc::c_int| {
        // SAFETY: a valid socket fd and a c_int option value.
        let r = unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, opt, (&raw const v).cast(), 4) };
        if r == 0 { Ok(()) } else { Err(anyhow::anyhow!("setsockopt {opt}: {}", std::io::Error::last_os_error())) }
    };
    let seq = |queue| -> Result<u32> {
        set(libc::TCP_REPAIR_QUEUE, queue)?;
        let mut v: u32 = 0;
        let mut len: libc::socklen_t = 4;
        // SAFETY: a valid fd and a 4-byte buffer.
        if unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ, (&raw mut v).cast(), &raw mut len) } != 0 {
            bail!("TCP_QUEUE_SEQ: {}", std::io::Error::last_os_error());
        }
        Ok(v)
    };
    set(libc::TCP_REPAIR, 1)?;
    let seqs = seq(TCP_SEND_QUEUE).and_then(|snd| Ok((snd, seq(TCP_RECV_QUEUE)?)));
    set(libc::TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)?;
    seqs
}

/// A 20-byte TCP header with its checksum over the IPv4 pseudo-header.
fn segment(from: SocketAddrV4, to: SocketAddrV4, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&from.port().to_be_bytes());
    h.extend_from_slice(&to.port().to_be_bytes());
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ack.to_be_bytes());
    h.extend_from_slice(&[5 << 4, flags]);
    h.extend_from_slice(&64240u16.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&h);
    let mut sum: u32 = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !u16::try_from(sum).unwrap_or(0);
    h[16..18].copy_from_slice(&check.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    /// The checksum verifies: summing the pseudo-header and the segment gives 0xffff.
    #[test]
    fn checksum_verifies() {
        let (a, b) = ("10.0.0.1:40000".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let h = super::segment(a, b, 0x1234_5678, 0x9abc_def0, super::ACK);
        let mut all = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20];
        all.extend_from_slice(&h);
        let mut sum: u32 = all.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }
}
