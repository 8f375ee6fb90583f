//! Pods from node-local state, no API server: libcni's result cache names each sandbox (pod
//! namespace/name, IPs, netns path); the live system gives the netns inode and the host-side
//! veth (`lxc…`) behind the pod's interface.
pub mod cni;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};


use anyhow::{Result, bail};

use crate::{
    kernel::rtnl::{Link, Rtnl},
    netns::Netns,
};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// A pod as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// "namespace/name".
    pub key: String,
    pub container_ids: Vec<String>,
    /// Inodes of its live network namespaces.
    pub netns: Vec<u32>,
    pub ips: Vec<IpAddr>,
    /// Host-side interfaces: (name, ifindex, namespace inode) of the veth peer of the pod's
    /// interface (the root namespace on a real node).
    pub host_ifs: Vec<(String, u32, u32)>,
    /// The pod-side interface names (`eth0`).
    pub pod_ifs: Vec<String>,
    /// False when none of its cache entries points at a namespace that still exists.
    pub live: bool,
}

#[derive(Debug, Default)]
pub struct Pods {
    pub dir: PathBuf,
    pub pods: Vec<Pod>,
    by_ip: HashMap<IpAddr, usize>,
    by_netns: HashMap<u32, usize>,
    /// (netns inode, ifindex) of a host-side interface → pod.
    by_iface: HashMap<(u32, u32), usize>,
}

fn inode(path: &str) -> Option<u32> {
    std::fs::metadata(path).ok().and_then(|m| u32::try_from(m.ino()).ok())
}

/// Interfaces of every namespace we can name, listed once each.
struct Spaces {
    known: Vec<Netns>,
    links: HashMap<u32, Vec<Link>>,
    nsids: HashMap<(String, u32), Option<i32>>,
    /// A netlink socket in each pod namespace asked so far.
    sockets: HashMap<String, Rtnl>,
}

impl Spaces {
    fn links(&mut self, inode: u32) -> &[Link] {
        let known = &self.known;
        self.links.entry(inode).or_insert_with(|| {
            known
                .iter()
                .find(|n| n.inode == inode)
                .and_then(|n| Rtnl::open_in(&n.path).ok())
                .and_then(|mut r| r.links().ok())
                .unwrap_or_default()
        })
    }

    fn links_at(&mut self, path: &str, inode: u32) -> &[Link] {
        if !self.known.iter().any(|n| n.inode == inode) {
            self.known.push(Netns { inode, path: path.into(), name: path.into() });
        }
        self.links(inode)
    }

    /// The id the namespace at `from` gives namespace `inode` (cached).
    fn nsid(&mut self, from: &str, inode: u32) -> Option<i32> {
        if let Some(n) = self.nsids.get(&(from.to_string(), inode)) {
            return *n;
        }
        let target = self.known.iter().find(|n| n.inode == inode).map(|n| n.path.clone());
        if !self.sockets.contains_key(from)
            && let Ok(r) = Rtnl::open_in(Path::new(from))
        {
            self.sockets.insert(from.to_string(), r);
        }
        let n = (|| {
            let f = std::fs::File::open(target?).ok()?;
            self.sockets.get_mut(from)?.nsid_of(std::os::fd::AsRawFd::as_raw_fd(&f)).ok()?
        })();
        self.nsids.insert((from.to_string(), inode), n);
        n
    }

    /// The host side of a pod's veth: the peer of the pod's interface (ifindex and namespace
    /// from `IFLA_LINK`/`IFLA_LINK_NETNSID`, the namespace matched by its id as the pod's
    /// namespace numbers it: ifindexes alone repeat across namespaces). When the CNI result
    /// names host-side interfaces, the peer must be one of them; when the pod's namespace is
    /// gone, an interface of that name (root namespace first) is the best guess.
    fn host_side(&mut self, e: &cni::CacheEntry, pod_ns: Option<u32>) -> Vec<(String, u32, u32)> {
        let pod = match (pod_ns, e.netns.as_deref()) {
            (Some(ns), Some(path)) => Some((ns, path.to_string())),
            _ => None,
        };
        let pod_if = pod.as_ref().and_then(|(ns, path)| self.links_at(path, *ns).iter().find(|l| l.name == e.if_name).cloned());
        let peer = pod_if.as_ref().and_then(|p| Some((p.link?, p.link_netnsid?)));
        let named: Vec<String> = e.interfaces.iter().filter(|i| i.sandbox.is_none()).map(|i| i.name.clone()).collect();
        let inodes: Vec<u32> = self.known.iter().map(|n| n.inode).filter(|&i| Some(i) != pod_ns).collect();
        let mut by_name = Vec::new();
        for inode in inodes {
            // Ask for the namespace id only where an interface has the peer's ifindex.
            let has_idx = peer.is_some_and(|(idx, _)| self.links(inode).iter().any(|l| l.ifindex == idx));
            let peer_here = match (&peer, &pod) {
                (Some((idx, nsid)), Some((_, path))) if has_idx => self.nsid(path, inode).is_some_and(|n| n == *nsid).then_some(*idx),
                _ => None,
            };
            for l in self.links(inode) {
                let is_named = named.contains(&l.name);
                if peer_here == Some(l.ifindex) && (named.is_empty() || is_named) {
                    return vec![(l.name.clone(), l.ifindex, inode)];
                }
                if is_named {
                    by_name.push((l.name.clone(), l.ifindex, inode));
                }
            }
        }
        if pod_if.is_some() && peer.is_some() {
            // The peer is known and is none of these: better no interface than a wrong one.
            return Vec::new();
        }
        by_name.truncate(1);
        by_name
    }
}

impl Pods {
    /// Reads the cache under `dir` and resolves each pod against the running system.
    pub fn load(dir: &Path) -> Result<Self> {
        let (entries, bad) = cni::read_dir(dir)?;
        for (f, why) in &bad {
            log::debug!("CNI cache: skipped {f}: {why}");
        }
        let mut spaces = Spaces { known: crate::netns::known(), links: HashMap::new(), nsids: HashMap::new(), sockets: HashMap::new() };
        let mut by_key: BTreeMap<String, Pod> = BTreeMap::new();
        for e in entries {
            let (Some(ns), Some(name)) = (&e.pod_namespace, &e.pod_name) else { continue };
            let key = format!("{ns}/{name}");
            let netns = e.netns.as_deref().and_then(inode);
            let live = netns.is_some();
            let host = spaces.host_side(&e, netns);
            let p = by_key.entry(key.clone()).or_insert_with(|| Pod {
                key,
                container_ids: Vec::new(),
                netns: Vec::new(),
                ips: Vec::new(),
                host_ifs: Vec::new(),
                pod_ifs: Vec::new(),
                live: false,
            });
            // Stale sandboxes (namespace gone) only count while the pod has no live one.
            if live && !p.live {
                *p = Pod { key: p.key.clone(), container_ids: Vec::new(), netns: Vec::new(), ips: Vec::new(), host_ifs: Vec::new(), pod_ifs: Vec::new(), live: true };
            } else if !live && p.live {
                continue;
            }
            p.container_ids.push(e.container_id.clone());
            p.netns.extend(netns);
            p.ips.extend(e.ips.iter().copied());
            p.host_ifs.extend(host);
            p.pod_ifs.push(e.if_name.clone());
            for v in [&mut p.container_ids, &mut p.pod_ifs] {
                v.sort();
                v.dedup();
            }
            p.netns.sort_unstable();
            p.netns.dedup();
            p.ips.sort();
            p.ips.dedup();
            p.host_ifs.sort();
            p.host_ifs.dedup();
        }
        for p in by_key.values() {
            log::debug!("pod {}: netns {:?}, host side {:?}, IPs {:?}{}", p.key, p.netns, p.host_ifs, p.ips, if p.live { "" } else { " (stale)" });
        }
        Ok(Self::index(dir.to_path_buf(), by_key.into_values().collect()))
    }

    fn index(dir: PathBuf, pods: Vec<Pod>) -> Self {
        let mut s = Self { dir, pods, ..Default::default() };
        // Live pods first, so a stale sandbox never takes a live pod's address.
        let mut order: Vec<usize> = (0..s.pods.len()).collect();
        order.sort_by_key(|&i| !s.pods[i].live);
        for i in order {
            let p = &s.pods[i];
            for ip in &p.ips {
                s.by_ip.entry(*ip).or_insert(i);
            }
            for n in &p.netns {
                s.by_netns.entry(*n).or_insert(i);
            }
            for (_, ifindex, ns) in &p.host_ifs {
                s.by_iface.entry((*ns, *ifindex)).or_insert(i);
            }
        }
        s
    }

    pub fn by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.by_ip.get(&ip).map(|&i| &self.pods[i])
    }

    /// The pod behind an interface: its host-side veth, or any device in its namespace.
    pub fn by_iface(&self, netns: u32, ifindex: u32) -> Option<&Pod> {
        self.by_iface.get(&(netns, ifindex)).or_else(|| self.by_netns.get(&netns)).map(|&i| &self.pods[i])
    }

    /// `--pod NAMESPACE/NAME` → the pod, or a one-line error naming close matches.
    pub fn select(&self, spec: &str) -> Result<&Pod> {
        if spec.split('/').count() != 2 || spec.starts_with('/') || spec.ends_with('/') {
            bail!("--pod {spec:?}: give the pod as NAMESPACE/NAME, e.g. --pod default/web-0");
        }
        if let Some(p) = self.pods.iter().find(|p| p.key == spec) {
            return Ok(p);
        }
        let mut close: Vec<(f64, &str)> = self
            .pods
            .iter()
            .map(|p| (strsim::jaro_winkler(spec, &p.key).max(strsim::jaro_winkler(spec.rsplit('/').next().unwrap_or(spec), p.key.rsplit('/').next().unwrap_or(""))), p.key.as_str()))
            .filter(|(s, _)| *s >= 0.8)
            .collect();
        close.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let hint = if close.is_empty() {
            if self.pods.is_empty() {
                " (the cache has no pod entries)".to_string()
            } else {
                let some: Vec<&str> = self.pods.iter().take(5).map(|p| p.key.as_str()).collect();
                format!("; known pods include {}", some.join(", "))
            }
        } else {
            let names: Vec<&str> = close.iter().take(3).map(|c| c.1).collect();
            format!("; did you mean {}?", names.join(", "))
        };
        bail!("unknown pod {spec} in the CNI cache {} ({} pods){hint}", cni::results_dir(&self.dir).display(), self.pods.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(key: &str, ip: &str, netns: u32, ifindex: u32, live: bool) -> Pod {
        Pod {
            key: key.into(),
            container_ids: vec!["c".into()],
            netns: vec![netns],
            ips: vec![ip.parse().unwrap()],
            host_ifs: vec![(format!("lxc{ifindex}"), ifindex, 1)],
            pod_ifs: vec!["eth0".into()],
            live,
        }
    }

    fn sample() -> Pods {
        Pods::index("/nonexistent".into(), vec![pod("default/web-0", "10.0.0.1", 100, 5, true), pod("default/web-1", "10.0.0.2", 101, 6, true), pod("kube-system/dns", "10.0.0.3", 102, 7, false)])
    }

    #[test]
    fn lookups() {
        let p = sample();
        assert_eq!(p.by_ip("10.0.0.2".parse().unwrap()).unwrap().key, "default/web-1");
        assert_eq!(p.by_ip("::ffff:10.0.0.1".parse().unwrap()).unwrap().key, "default/web-0");
        assert_eq!(p.by_iface(1, 5).unwrap().key, "default/web-0");
        assert_eq!(p.by_iface(101, 2).unwrap().key, "default/web-1");
        assert!(p.by_iface(1, 99).is_none());
    }

    #[test]
    fn live_pod_wins_an_address_over_a_stale_one() {
        let p = Pods::index("/x".into(), vec![pod("a/old", "10.0.0.9", 1, 1, false), pod("b/new", "10.0.0.9", 2, 2, true)]);
        assert_eq!(p.by_ip("10.0.0.9".parse().unwrap()).unwrap().key, "b/new");
    }

    #[test]
    fn unknown_pod_names_close_matches() {
        let p = sample();
        assert_eq!(p.select("default/web-0").unwrap().key, "default/web-0");
        let e = p.select("default/web-9").unwrap_err().to_string();
        assert!(e.contains("unknown pod default/web-9") && e.contains("did you mean default/web-0, default/web-1"), "{e}");
        assert!(!e.contains('\n'));
        let e = p.select("web-0").unwrap_err().to_string();
        assert!(e.contains("NAMESPACE/NAME"), "{e}");
        let e = p.select("zzz/qqqqqq").unwrap_err().to_string();
        assert!(e.contains("known pods include"), "{e}");
    }
}
