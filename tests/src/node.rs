//! A Cilium-native-routing-like node built from network namespaces.
//!
//! The host side lives in its own "node" namespace, not in the root one: the kernel code paths
//! (veth, routing, forwarding, netfilter, tc) are per-namespace and identical, while the root
//! namespace's shared state stays untouched — its iptables ruleset, `ip_forward`, the fixed names
//! `cilium_host`/`cilium_net` and a blackhole route for the test range could otherwise collide
//! with other tests running at the same time or with the machine's own network. Deleting the
//! node namespace also takes down anything a crashed test left in it.
//!
//! Layout (slot `k` of the range `A.B.0.0/16`, pods `i = 0..n`):
//! - pod netns `<prefix><k>p<i>`: `eth0` with `A.B.k.(10+i)/32`, `default via A.B.k.1 dev eth0
//!   onlink`, a permanent neighbour entry for the gateway;
//! - node netns `<prefix><k>node`: per pod a veth `lxc<hex>` (peer of the pod's eth0) with
//!   `proxy_arp` and `A.B.k.(10+i)/32 dev lxc… scope link`; `cilium_host`/`cilium_net` veth pair
//!   with the gateway `A.B.k.1/32` on `cilium_host`; `blackhole A.B.0.0/16`; `ip_forward=1`;
//!   IPv6 disabled.
//!
//! With `NodeOptions::ipv6` the node is dual-stack, the same shape in IPv6: pod `i` also has
//! `fd00:A:B:k::(10+i)/128` (hex), the gateway `fd00:A:B:k::1` on `cilium_host` (answered on
//! each lxc by proxy NDP, as Cilium's ND responder does), `blackhole fd00:A:B::/48`,
//! `forwarding=1`; no DAD, router solicitations or router advertisements (addresses usable at
//! once, no unrelated packets beyond the MLD reports of links coming up).
//!
//! Neighbour entries are static (as Cilium's ARP responder makes them answer at once): a first
//! packet never waits in an ARP queue, so exact counts do not depend on ARP timing.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    path::PathBuf,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{cmd, netns};

/// Where a node is built. Other suites pick their own prefix and range so they can run at the
/// same time as this one.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Prefix of namespace names (and of rule comments). Short: names are `<prefix><k>node`.
    pub prefix: String,
    /// The /16 the node's addresses come from (first two octets).
    pub range: [u8; 2],
    /// Number of pods.
    pub pods: usize,
    /// Dual-stack (see the module's doc); IPv4 only by default.
    pub ipv6: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self { prefix: "tb".into(), range: [10, 210], pods: 2, ipv6: false }
    }
}

/// A pod: its namespace and the host side of its veth.
#[derive(Debug, Clone)]
pub struct Pod {
    pub index: usize,
    /// Name of its network namespace (under /var/run/netns).
    pub netns: String,
    pub ip: Ipv4Addr,
    /// With `NodeOptions::ipv6`.
    pub ip6: Option<Ipv6Addr>,
    /// Its interface inside the pod (always `eth0`, as in Kubernetes).
    pub eth: String,
    pub eth_mac: [u8; 6],
    pub eth_ifindex: u32,
    /// Host-side veth in the node namespace (`lxc` + hex).
    pub lxc: String,
    pub lxc_mac: [u8; 6],
    pub lxc_ifindex: u32,
}

impl Pod {
    #[must_use]
    pub fn addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, port)
    }

    /// The pod's IPv6 address and `port`. Panics on an IPv4-only node (a test bug).
    #[must_use]
    pub fn addr6(&self, port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(self.ip6.expect("an IPv6 address: build the node with NodeOptions::ipv6"), port, 0, 0)
    }

    #[must_use]
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.netns)
    }

    /// The pod namespace's inode, as the tracer reports it in `netns`.
    pub fn netns_inode(&self) -> Result<u64> {
        netns::inode(&self.netns)
    }
}

/// An iptables rule added through [`Node::iptables`]; removed when the node drops.
#[derive(Debug, Clone)]
pub struct IptRule {
    /// `iptables` or `ip6tables`.
    pub tool: String,
    pub table: String,
    pub chain: String,
    /// The rule's comment: how its counters are found in `iptables -vnxL`.
    pub comment: String,
    spec: Vec<String>,
}

/// Something added to the node after it was built, undone (in reverse order) on drop.
#[derive(Debug)]
enum Undo {
    Iptables(IptRule),
    NftTable { family: String, name: String },
    Route(Vec<String>),
}

#[derive(Debug)]
pub struct Node {
    opts: NodeOptions,
    slot: u8,
    name: String,
    gateway: Ipv4Addr,
    gateway6: Option<Ipv6Addr>,
    pods: Vec<Pod>,
    /// Namespaces created so far (the node's first), deleted on drop.
    namespaces: Vec<String>,
    links: Vec<String>,
    undo: Vec<Undo>,
    owner_file: Option<PathBuf>,
    next_id: u32,
}

impl Node {
    /// A node with `pods` pods in the default range (prefix `tb`, 10.210.0.0/16).
    pub fn new(pods: usize) -> Result<Self> {
        Self::with_options(NodeOptions { pods, ..NodeOptions::default() })
    }

    pub fn with_options(opts: NodeOptions) -> Result<Self> {
        if !crate::is_root() {
            bail!("the testbed needs root (network namespaces, veths, routes)");
        }
        if opts.pods > 200 {
            bail!("at most 200 pods per node");
        }
        let (slot, owner_file) = claim_slot(&opts)?;
        let name = format!("{}{slot}node", opts.prefix);
        let [a, b] = opts.range;
        let mut node = Self {
            gateway: Ipv4Addr::new(a, b, slot, 1),
            gateway6: opts.ipv6.then(|| v6(opts.range, slot, 1)),
            name: name.clone(),
            namespaces: vec![name],
            owner_file: Some(owner_file),
            opts,
            slot,
            pods: Vec::new(),
            links: Vec::new(),
            undo: Vec::new(),
            next_id: 0,
        };
        // On any error below, dropping `node` removes what was built so far.
        node.build_host()?;
        for i in 0..node.opts.pods {
            node.add_pod(i)?;
        }
        Ok(node)
    }

    fn build_host(&mut self) -> Result<()> {
        let ns = self.name.clone();
        if self.opts.ipv6 {
            ipv6_on(&ns)?;
            netns::sysctl(&ns, "net.ipv6.conf.all.forwarding", "1")?;
            netns::sysctl(&ns, "net.ipv6.conf.default.forwarding", "1")?;
        } else {
            quiet_ipv6(&ns)?;
        }
        netns::sysctl(&ns, "net.ipv4.ip_forward", "1")?;
        netns::sysctl(&ns, "net.ipv4.conf.all.rp_filter", "0")?;
        netns::sysctl(&ns, "net.ipv4.conf.default.rp_filter", "0")?;
        ip(&ns, &["link", "set", "lo", "up"])?;
        ip(&ns, &["link", "add", "cilium_host", "type", "veth", "peer", "name", "cilium_net"])?;
        self.links.push("cilium_host".into());
        ip(&ns, &["link", "set", "cilium_host", "up"])?;
        ip(&ns, &["link", "set", "cilium_net", "up"])?;
        ip(&ns, &["addr", "add", &format!("{}/32", self.gateway), "dev", "cilium_host"])?;
        let [a, b] = self.opts.range;
        ip(&ns, &["route", "add", "blackhole", &format!("{a}.{b}.0.0/16")])?;
        if let Some(gw6) = self.gateway6 {
            ip(&ns, &["-6", "addr", "add", &format!("{gw6}/128"), "dev", "cilium_host", "nodad"])?;
            ip(&ns, &["-6", "route", "add", "blackhole", &format!("{}/48", v6(self.opts.range, 0, 0))])?;
        }
        Ok(())
    }

    fn add_pod(&mut self, i: usize) -> Result<()> {
        let idx = u8::try_from(i)?;
        let pod_ns = format!("{}{}p{i}", self.opts.prefix, self.slot);
        cmd::run("ip", &["netns", "add", &pod_ns])?;
        self.namespaces.push(pod_ns.clone());
        if self.opts.ipv6 {
            ipv6_on(&pod_ns)?;
        } else {
            quiet_ipv6(&pod_ns)?;
        }
        ip(&pod_ns, &["link", "set", "lo", "up"])?;
        let [a, b] = self.opts.range;
        let pod_ip = Ipv4Addr::new(a, b, self.slot, 10 + idx);
        let lxc = format!("lxc{}", random_hex(4)?);
        let lxc_mac = [0x02, 0x7b, b, self.slot, 0x01, idx];
        let eth_mac = [0x02, 0x7b, b, self.slot, 0x02, idx];
        ip(
            &self.name,
            &[
                "link", "add", &lxc, "address", &mac(lxc_mac), "type", "veth", "peer", "name", "eth0", "address",
                &mac(eth_mac), "netns", &pod_ns,
            ],
        )?;
        self.links.push(lxc.clone());
        // Host side: as Cilium sets up an endpoint with per-endpoint routes.
        if self.opts.ipv6 {
            netns::sysctl(&self.name, &format!("net.ipv6.conf.{lxc}.proxy_ndp"), "1")?;
            // Answered at once, as Cilium's responder does (a delayed answer queues a clone
            // and frees the solicitation with kfree_skb: a drop to the tracer).
            netns::sysctl(&self.name, &format!("net.ipv6.neigh.{lxc}.proxy_delay"), "0")?;
        } else if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            netns::sysctl(&self.name, &format!("net.ipv6.conf.{lxc}.disable_ipv6"), "1")?;
        }
        netns::sysctl(&self.name, &format!("net.ipv4.conf.{lxc}.proxy_arp"), "1")?;
        netns::sysctl(&self.name, &format!("net.ipv4.conf.{lxc}.rp_filter"), "0")?;
        ip(&self.name, &["link", "set", &lxc, "up"])?;
        ip(&self.name, &["route", "add", &format!("{pod_ip}/32"), "dev", &lxc, "scope", "link"])?;
        ip(&self.name, &["neigh", "replace", &pod_ip.to_string(), "lladdr", &mac(eth_mac), "dev", &lxc, "nud", "permanent"])?;
        // Pod side.
        ip(&pod_ns, &["addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"])?;
        ip(&pod_ns, &["link", "set", "eth0", "up"])?;
        let gw = self.gateway.to_string();
        ip(&pod_ns, &["route", "add", "default", "via", &gw, "dev", "eth0", "onlink"])?;
        ip(&pod_ns, &["neigh", "replace", &gw, "lladdr", &mac(lxc_mac), "dev", "eth0", "nud", "permanent"])?;
        let ip6 = self.gateway6.map(|_| v6(self.opts.range, self.slot, 10 + u16::from(idx)));
        if let (Some(pod6), Some(gw6)) = (ip6, self.gateway6) {
            let (pod6, gw6) = (pod6.to_string(), gw6.to_string());
            ip(&self.name, &["-6", "route", "add", &format!("{pod6}/128"), "dev", &lxc])?;
            ip(&self.name, &["-6", "neigh", "replace", &pod6, "lladdr", &mac(eth_mac), "dev", &lxc, "nud", "permanent"])?;
            ip(&self.name, &["-6", "neigh", "add", "proxy", &gw6, "dev", &lxc])?;
            ip(&pod_ns, &["-6", "addr", "add", &format!("{pod6}/128"), "dev", "eth0", "nodad"])?;
            ip(&pod_ns, &["-6", "route", "add", "default", "via", &gw6, "dev", "eth0", "onlink"])?;
            ip(&pod_ns, &["-6", "neigh", "replace", &gw6, "lladdr", &mac(lxc_mac), "dev", "eth0", "nud", "permanent"])?;
        }
        let eth_ifindex = ifindex(&pod_ns, "eth0")?;
        let lxc_ifindex = ifindex(&self.name, &lxc)?;
        self.pods.push(Pod { index: i, netns: pod_ns, ip: pod_ip, ip6, eth: "eth0".into(), eth_mac, eth_ifindex, lxc, lxc_mac, lxc_ifindex });
        Ok(())
    }

    /// Name of the node (host-side) namespace.
    #[must_use]
    pub fn netns(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.name)
    }

    /// The namespace's inode, as the tracer reports it in `netns`.
    pub fn netns_inode(&self) -> Result<u64> {
        netns::inode(&self.name)
    }

    /// Sends `count` UDP datagrams from the node namespace (source: the gateway address on
    /// `cilium_host`, port `sport`): traffic the host itself makes.
    pub fn send_udp(&self, sport: u16, to: SocketAddrV4, count: usize, payload: &[u8]) -> Result<usize> {
        crate::traffic::send_udp_in(&self.name, SocketAddrV4::new(self.gateway, sport), to, count, payload)
    }

    /// The gateway address (on `cilium_host`).
    #[must_use]
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// An address in the node's range that no pod has: the blackhole route eats packets to it.
    #[must_use]
    pub fn unused_ip(&self) -> Ipv4Addr {
        let [a, b] = self.opts.range;
        Ipv4Addr::new(a, b, self.slot, 250)
    }

    /// The IPv6 gateway (on `cilium_host`); None on an IPv4-only node.
    #[must_use]
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        self.gateway6
    }

    /// The IPv6 twin of [`Node::unused_ip`] (under the IPv6 blackhole route).
    #[must_use]
    pub fn unused_ip6(&self) -> Ipv6Addr {
        v6(self.opts.range, self.slot, 250)
    }

    #[must_use]
    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }

    #[must_use]
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Runs a command in the node namespace (`ip netns exec`), returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        cmd::run_in(&self.name, program, args)
    }

    /// Appends an iptables rule (`iptables -t TABLE -A CHAIN RULE… -m comment`) in the node
    /// namespace; it is deleted when the node drops.
    pub fn iptables(&mut self, table: &str, chain: &str, rule: &[&str]) -> Result<IptRule> {
        self.xtables("iptables", table, chain, rule)
    }

    /// [`Node::iptables`] with `iptables-legacy` (`x_tables`: no `nf_tables` generation).
    pub fn iptables_legacy(&mut self, table: &str, chain: &str, rule: &[&str]) -> Result<IptRule> {
        self.xtables("iptables-legacy", table, chain, rule)
    }

    /// [`Node::iptables`] with `ip6tables`.
    pub fn ip6tables(&mut self, table: &str, chain: &str, rule: &[&str]) -> Result<IptRule> {
        self.xtables("ip6tables", table, chain, rule)
    }

    fn xtables(&mut self, tool: &str, table: &str, chain: &str, rule: &[&str]) -> Result<IptRule> {
        let comment = format!("{}{}-r{}", self.opts.prefix, self.slot, self.next_id);
        self.next_id += 1;
        let mut spec: Vec<String> = rule.iter().map(ToString::to_string).collect();
        spec.extend(["-m".into(), "comment".into(), "--comment".into(), comment.clone()]);
        let mut args = vec!["-w".to_string(), "-t".into(), table.into(), "-A".into(), chain.into()];
        args.extend(spec.iter().cloned());
        cmd::run_in(&self.name, tool, &args)?;
        let r = IptRule { tool: tool.into(), table: table.into(), chain: chain.into(), comment, spec };
        self.undo.push(Undo::Iptables(r.clone()));
        Ok(r)
    }

    /// Packet counter of a rule added with [`Node::iptables`] or [`Node::ip6tables`]
    /// (`iptables -vnxL`).
    pub fn iptables_packets(&self, rule: &IptRule) -> Result<u64> {
        let out = cmd::run_in(&self.name, &rule.tool, &["-w", "-t", &rule.table, "-vnxL", &rule.chain])?;
        let needle = format!("/* {} */", rule.comment);
        let line = out
            .lines()
            .find(|l| l.contains(&needle))
            .ok_or_else(|| anyhow!("rule {} not found in `iptables -vnxL {}`:\n{out}", rule.comment, rule.chain))?;
        let pkts = line.split_whitespace().next().context("empty iptables line")?;
        pkts.parse().with_context(|| format!("bad packet counter in {line:?}"))
    }

    /// Loads `table FAMILY NAME { BODY }` with nft in the node namespace; the table is deleted
    /// when the node drops.
    pub fn nft_table(&mut self, family: &str, name: &str, body: &str) -> Result<()> {
        let script = format!("table {family} {name} {{\n{body}\n}}\n");
        cmd::run_with_input("ip", &["netns", "exec", &self.name, "nft", "-f", "-"], &script)?;
        self.undo.push(Undo::NftTable { family: family.into(), name: name.into() });
        Ok(())
    }

    /// Adds a route in the node namespace (`ip route add ARGS…`), deleted when the node drops.
    pub fn route(&mut self, args: &[&str]) -> Result<()> {
        let mut full = vec!["route", "add"];
        full.extend_from_slice(args);
        ip(&self.name, &full)?;
        self.undo.push(Undo::Route(args.iter().map(ToString::to_string).collect()));
        Ok(())
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for u in self.undo.drain(..).rev() {
            let r = match &u {
                Undo::Iptables(r) => {
                    let mut args = vec!["-w".to_string(), "-t".into(), r.table.clone(), "-D".into(), r.chain.clone()];
                    args.extend(r.spec.iter().cloned());
                    cmd::run_in(&self.name, &r.tool, &args).map(drop)
                }
                Undo::NftTable { family, name } => cmd::run_in(&self.name, "nft", &["delete", "table", family, name]).map(drop),
                Undo::Route(args) => {
                    let mut full = vec!["route".to_string(), "del".into()];
                    full.extend(args.iter().cloned());
                    cmd::run("ip", &[&["-n".to_string(), self.name.clone()], &full[..]].concat()).map(drop)
                }
            };
            if let Err(e) = r {
                errors.push(format!("{e:#}"));
            }
        }
        // Deleting the links first makes the veths go away now, not when the namespace's last
        // reference does.
        for l in self.links.drain(..).rev() {
            if let Err(e) = ip(&self.name, &["link", "del", &l]) {
                errors.push(format!("{e:#}"));
            }
        }
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = cmd::run("ip", &["netns", "del", &ns]) {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(f) = self.owner_file.take() {
            let _ = std::fs::remove_file(f);
        }
        errors
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("testbed: cleanup of {}: {e}", self.name);
        }
    }
}

/// Index of `dev` in the named namespace (sysfs would show the root namespace's devices).
pub fn ifindex(netns: &str, dev: &str) -> Result<u32> {
    let out = ip(netns, &["-o", "link", "show", "dev", dev])?;
    let n = out.split(':').next().unwrap_or_default().trim();
    n.parse().with_context(|| format!("no ifindex for {dev} in {netns}: {out}"))
}

fn ip(netns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    cmd::run("ip", &full)
}

/// No IPv6 in the namespace: router solicitations and DAD would add unrelated packets.
fn quiet_ipv6(ns: &str) -> Result<()> {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    netns::sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    netns::sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
}

/// IPv6 on in a namespace without DAD, router solicitations or advertisements.
fn ipv6_on(ns: &str) -> Result<()> {
    for (key, value) in [("disable_ipv6", "0"), ("accept_dad", "0"), ("dad_transmits", "0"), ("router_solicitations", "0"), ("accept_ra", "0")] {
        for scope in ["all", "default"] {
            netns::sysctl(ns, &format!("net.ipv6.conf.{scope}.{key}"), value)?;
        }
    }
    Ok(())
}

/// `fd00:A:B:slot::host` for the range `A.B`.
fn v6([a, b]: [u8; 2], slot: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, u16::from(a), u16::from(b), u16::from(slot), 0, 0, 0, host)
}

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn random_hex(bytes: usize) -> Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Claims a slot `k` (1..=250) by creating the namespace `<prefix><k>node`: `ip netns add` fails
/// when it exists, which makes it a lock across processes. A slot whose owner process is gone
/// (a killed test run) is reclaimed.
fn claim_slot(opts: &NodeOptions) -> Result<(u8, PathBuf)> {
    let owners = PathBuf::from(format!("/run/{}-testbed", opts.prefix));
    std::fs::create_dir_all(&owners).with_context(|| format!("cannot create {}", owners.display()))?;
    for k in 1..=250u8 {
        let name = format!("{}{k}node", opts.prefix);
        let owner_file = owners.join(k.to_string());
        if netns::path(&name).exists() {
            if !owner_is_gone(&owner_file) {
                continue;
            }
            reap_slot(opts, k);
        }
        if cmd::run("ip", &["netns", "add", &name]).is_ok() {
            std::fs::write(&owner_file, std::process::id().to_string())
                .with_context(|| format!("cannot write {}", owner_file.display()))?;
            return Ok((k, owner_file));
        }
    }
    bail!("no free testbed slot: 250 `{}*node` namespaces exist (`ip netns list`)", opts.prefix)
}

fn owner_is_gone(owner_file: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(owner_file) else { return false };
    let Ok(pid) = text.trim().parse::<i32>() else { return false };
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

/// Removes every namespace of a dead owner's slot `k`.
fn reap_slot(opts: &NodeOptions, k: u8) {
    let node = format!("{}{k}node", opts.prefix);
    let pod_prefix = format!("{}{k}p", opts.prefix);
    if let Ok(dir) = std::fs::read_dir("/var/run/netns") {
        for e in dir.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let is_pod = n.strip_prefix(&pod_prefix).is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()));
            if is_pod {
                let _ = cmd::run("ip", &["netns", "del", &n]);
            }
        }
    }
    let _ = cmd::run("ip", &["netns", "del", &node]);
    eprintln!("testbed: reclaimed slot {k} ({node}) of a test run that is gone");
}
