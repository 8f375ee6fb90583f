//! A small rtnetlink client: interfaces, qdiscs and tc filters of one network namespace, and
//! adding/removing our own `cls_bpf` filters. A netlink socket stays bound to the namespace it
//! was created in, so one opened on a thread inside a namespace works from any thread later.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::Result;

const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));

const RTM_GETLINK: u16 = 18;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
/// `IFLA_XDP` and, nested in it, `IFLA_XDP_ATTACHED` (non-zero: a program runs).
const IFLA_XDP: (u16, u16) = (43, 2);

const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_TAG: u16 = 10;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;

/// Parent handles of the clsact qdisc's two filter lists.
pub const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
pub const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;
/// `ETH_P_ALL` as tc stores a filter's protocol (network byte order).
pub const PROTO_ALL: u16 = 0x0003_u16.to_be();

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `IFLA_LINK`: for a veth, the peer's ifindex (in `link_netnsid`'s namespace when set).
    pub link: Option<u32>,
    pub link_netnsid: Option<i32>,
    pub kind: Option<String>,
    /// An XDP program is attached.
    pub xdp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: u32,
    pub kind: String,
}

/// One tc filter (a classifier instance with a handle) in execution order of its list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub prio: u16,
    /// As stored (network byte order).
    pub protocol: u16,
    pub handle: u32,
    pub kind: String,
    pub bpf: Option<BpfFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub prog_id: Option<u32>,
    /// `TCA_BPF_NAME`: what the attacher called the filter (tc: `file.o:[section]`).
    pub name: Option<String>,
    pub tag: Option<[u8; 8]>,
    pub direct_action: bool,
}

pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
}

impl Rtnl {
    /// A socket in the calling thread's namespace.
    pub fn open() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_ROUTE)
    }

    /// A socket of another netlink family (`NETLINK_NETFILTER`: kernel/nfnl.rs), same framing.
    pub(super) fn open_protocol(protocol: i32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Bound every wait: a reply that never comes is an error, not a hang.
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: valid option pointer and size.
        unsafe {
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const tv).cast(), libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(0));
        }
        Ok(Self { fd, seq: 1 })
    }

    /// A socket in the namespace at `path`.
    pub fn open_in(path: &Path) -> Result<Self> {
        Ok(crate::netns::run_in(path, Self::open)??)
    }

    /// Sends one request and collects the payloads of the answers (for a dump, every part up
    /// to `NLMSG_DONE`; with `NLM_F_ACK`, up to the acknowledgement).
    pub(super) fn request(&mut self, msg_type: u16, flags: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut out = Vec::new();
        self.request_each(msg_type, flags, body, |t, p| out.push((t, p.to_vec())))?;
        Ok(out)
    }

    /// [`Self::request`], handing each answer's payload to `each` as it is read (a dump of
    /// 50,000 rules is never held whole).
    pub(super) fn request_each(&mut self, msg_type: u16, flags: u16, body: &[u8], mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDRLEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).map_err(io::Error::other)?.to_ne_bytes());
        msg.extend_from_slice(&msg_type.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: sending our buffer to the kernel (the socket's default peer is the kernel).
        let r = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut buf = vec![0u8; 64 * 1024];
        // A dump of 50,000 rules fits in far fewer reads than this.
        for _ in 0..100_000 {
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut data = &buf[..usize::try_from(n).map_err(io::Error::other)?];
            while data.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
                let mtype = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
                let mseq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
                if mlen < NLMSG_HDRLEN || mlen > data.len() {
                    return Err(io::Error::other("malformed netlink message"));
                }
                let payload = &data[NLMSG_HDRLEN..mlen];
                data = &data[align4(mlen).min(data.len())..];
                if mseq != seq {
                    continue;
                }
                match mtype {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let err = payload.get(0..4).map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                        if err != 0 {
                            return Err(io::Error::from_raw_os_error(-err));
                        }
                        if !dump {
                            return Ok(());
                        }
                    }
                    t => {
                        each(t, payload);
                        if !dump && flags & NLM_F_ACK == 0 {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Err(io::Error::other("netlink answer never ended"))
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let body = [0u8; 16]; // struct ifinfomsg, all zero: every interface
        let msgs = self.request(RTM_GETLINK, NLM_F_DUMP, &body)?;
        Ok(msgs.iter().filter_map(|(_, p)| parse_link(p)).collect())
    }

    pub fn qdiscs(&mut self) -> io::Result<Vec<Qdisc>> {
        let body = tcmsg(0, 0, 0, 0);
        let msgs = self.request(RTM_GETQDISC, NLM_F_DUMP, &body)?;
        Ok(msgs
            .iter()
            .filter_map(|(_, p)| {
                let ifindex = u32::from_ne_bytes(p.get(4..8)?.try_into().ok()?);
                let kind = attrs(p.get(20..)?).find(|(t, _)| *t == TCA_KIND).map(|(_, v)| cstr(v))?;
                Some(Qdisc { ifindex, kind })
            })
            .collect())
    }

    /// The filters on `parent` (e.g. `CLSACT_INGRESS`) of `ifindex`, in execution order.
    pub fn filters(&mut self, ifindex: u32, parent: u32) -> io::Result<Vec<Filter>> {
        let body = tcmsg(ifindex, 0, parent, 0);
        let msgs = self.request(RTM_GETTFILTER, NLM_F_DUMP, &body)?;
        let mut out: Vec<Filter> = msgs.iter().filter_map(|(_, p)| parse_filter(p)).collect();
        // The kernel walks priorities in order already; keep it explicit (stable sort keeps the
        // order within one priority, which is the order filters there run).
        out.sort_by_key(|f| f.prio);
        Ok(out)
    }

    /// Adds a direct-action `cls_bpf` filter running `prog_fd`.
    #[expect(clippy::too_many_arguments, reason = "mirrors the tc filter's identity fields")]
    pub fn add_bpf_filter(&mut self, ifindex: u32, parent: u32, prio: u16, protocol: u16, handle: u32, prog_fd: i32, name: &str) -> io::Result<()> {
        let mut body = tcmsg(ifindex, handle, parent, (u32::from(prio) << 16) | u32::from(protocol));
        put_attr(&mut body, TCA_KIND, b"bpf\0");
        let mut opts = Vec::new();
        put_attr(&mut opts, TCA_BPF_FD, &prog_fd.to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        put_attr(&mut opts, TCA_BPF_NAME, &n);
        put_attr(&mut opts, TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
        put_attr(&mut body, TCA_OPTIONS | NLA_F_NESTED, &opts);
        self.request(RTM_NEWTFILTER, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body).map(drop)
    }

    /// The id this socket's namespace gives the namespace open at `fd` (what `IFLA_LINK_NETNSID`
    /// of an interface here says about its peer); None when it has none.
    pub fn nsid_of(&mut self, fd: i32) -> io::Result<Option<i32>> {
        let mut body = vec![0u8; 4]; // struct rtgenmsg (AF_UNSPEC), padded
        put_attr(&mut body, NETNSA_FD, &fd.to_ne_bytes());
        let msgs = self.request(RTM_GETNSID, 0, &body)?;
        let nsid = msgs
            .iter()
            .filter(|(t, _)| *t == RTM_NEWNSID)
            .find_map(|(_, p)| attrs(p.get(4..)?).find(|(t, _)| *t == NETNSA_NSID).and_then(|(_, v)| u32_of(v)))
            .map(|n| i32::from_ne_bytes(n.to_ne_bytes()));
        Ok(nsid.filter(|&n| n >= 0))
    }

    /// Removes one filter (identified by priority, protocol, handle and kind).
    pub fn del_filter(&mut self, ifindex: u32, parent: u32, prio: u16, protocol: u16, handle: u32, kind: &str) -> io::Result<()> {
        let mut body = tcmsg(ifindex, handle, parent, (u32::from(prio) << 16) | u32::from(protocol));
        let mut k = kind.as_bytes().to_vec();
        k.push(0);
        put_attr(&mut body, TCA_KIND, &k);
        self.request(RTM_DELTFILTER, NLM_F_ACK, &body).map(drop)
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4]; // family, pad1, pad2
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&handle.to_ne_bytes());
    b.extend_from_slice(&parent.to_ne_bytes());
    b.extend_from_slice(&info.to_ne_bytes());
    b
}

pub(super) fn put_attr(buf: &mut Vec<u8>, t: u16, v: &[u8]) {
    let len = 4 + v.len();
    buf.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    buf.extend_from_slice(&t.to_ne_bytes());
    buf.extend_from_slice(v);
    buf.resize(align4(buf.len()), 0);
}

/// Iterates (type, value) of the netlink attributes in `b`; stops at the first malformed one.
pub(super) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        let t = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((t, v))
    })
}

pub(super) fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(0..4)?.try_into().ok()?))
}

fn parse_link(p: &[u8]) -> Option<Link> {
    let ifindex = u32::from_ne_bytes(p.get(4..8)?.try_into().ok()?);
    let mut l = Link { ifindex, name: String::new(), link: None, link_netnsid: None, kind: None, xdp: false };
    for (t, v) in attrs(p.get(16..)?) {
        match t {
            IFLA_IFNAME => l.name = cstr(v),
            IFLA_LINK => l.link = u32_of(v).filter(|&i| i != 0),
            IFLA_LINK_NETNSID => l.link_netnsid = u32_of(v).map(|n| i32::from_ne_bytes(n.to_ne_bytes())),
            IFLA_LINKINFO => l.kind = attrs(v).find(|(t, _)| *t == IFLA_INFO_KIND).map(|(_, k)| cstr(k)),
            t if t == IFLA_XDP.0 => l.xdp = attrs(v).any(|(t, a)| t == IFLA_XDP.1 && a.first().is_some_and(|&m| m != 0)),
            _ => {}
        }
    }
    Some(l)
}

fn parse_filter(p: &[u8]) -> Option<Filter> {
    let handle = u32::from_ne_bytes(p.get(8..12)?.try_into().ok()?);
    let info = u32::from_ne_bytes(p.get(16..20)?.try_into().ok()?);
    if handle == 0 {
        // The classifier instance itself (one per priority), not a filter.
        return None;
    }
    let mut f = Filter { prio: u16::try_from(info >> 16).ok()?, protocol: (info & 0xffff) as u16, handle, kind: String::new(), bpf: None };
    let mut options = None;
    for (t, v) in attrs(p.get(20..)?) {
        match t {
            TCA_KIND => f.kind = cstr(v),
            TCA_OPTIONS => options = Some(v),
            _ => {}
        }
    }
    if f.kind == "bpf"
        && let Some(o) = options
    {
        let mut b = BpfFilter { prog_id: None, name: None, tag: None, direct_action: false };
        for (t, v) in attrs(o) {
            match t {
                TCA_BPF_ID => b.prog_id = u32_of(v),
                TCA_BPF_NAME => b.name = Some(cstr(v)),
                TCA_BPF_TAG => b.tag = v.get(0..8).and_then(|t| t.try_into().ok()),
                TCA_BPF_FLAGS => b.direct_action = u32_of(v).is_some_and(|f| f & TCA_BPF_FLAG_ACT_DIRECT != 0),
                _ => {}
            }
        }
        f.bpf = Some(b);
    }
    Some(f)
}

#[cfg(test)]
#[path = "rtnl_tests.rs"]
mod tests;
