//! The doctor's view of the CNI result cache (parsed by `pods::cni`): which pods the node set
//! up, their IPs, sandboxes and host-side interfaces.
use std::{net::IpAddr, path::PathBuf};

use crate::pods::cni::{self, CacheEntry};

#[derive(Debug, Clone, Default)]
pub struct PodResult {
    pub file: String,
    pub container_id: String,
    /// `namespace/name` from the CNI args, when the runtime passed them.
    pub pod: Option<String>,
    pub ips: Vec<IpAddr>,
    /// Interfaces without a sandbox: the host side (Cilium: the `lxc…` veth).
    pub host_ifaces: Vec<String>,
    pub sandbox: Option<String>,
}

impl PodResult {
    pub fn label(&self) -> String {
        self.pod.clone().unwrap_or_else(|| format!("container {}", self.container_id.get(..12).unwrap_or(&self.container_id)))
    }
}

impl From<CacheEntry> for PodResult {
    fn from(e: CacheEntry) -> Self {
        let pod = e.pod_namespace.zip(e.pod_name).map(|(ns, name)| format!("{ns}/{name}"));
        let sandbox = e.netns.or_else(|| e.interfaces.iter().find_map(|i| i.sandbox.clone()));
        let host_ifaces = e.interfaces.into_iter().filter(|i| i.sandbox.is_none()).map(|i| i.name).collect();
        Self { file: e.file, container_id: e.container_id, pod, ips: e.ips, host_ifaces, sandbox }
    }
}

pub use cni::results_dir;

#[derive(Debug, Clone, Default)]
pub struct CniCache {
    pub dir: PathBuf,
    pub results: Vec<PodResult>,
    /// Files that could not be read as a CNI result.
    pub unreadable: Vec<String>,
}

/// `None` when the directory does not exist (no CNI on this node, or a different path).
pub fn load(dir: &std::path::Path) -> Option<CniCache> {
    let (entries, skipped) = cni::read_dir(dir).ok()?;
    Some(CniCache {
        dir: results_dir(dir),
        results: entries.into_iter().map(PodResult::from).collect(),
        unreadable: skipped.into_iter().map(|(name, _)| name).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entry_becomes_a_pod_result() {
        let env = r#"{"kind":"cniCacheV1","containerId":"0123456789abcdef","ifName":"eth0","networkName":"cilium",
            "cniArgs":[["K8S_POD_NAMESPACE","default"],["K8S_POD_NAME","web-1"]],
            "result":{"cniVersion":"0.3.1","interfaces":[{"name":"lxc1234","mac":"aa:bb:cc:dd:ee:ff"},
            {"name":"eth0","mac":"","sandbox":"/var/run/netns/cni-1"}],"ips":[{"address":"10.0.1.23/32","interface":1}]}}"#;
        let r = PodResult::from(cni::parse(env.as_bytes()).unwrap());
        assert_eq!(r.pod.as_deref(), Some("default/web-1"));
        assert_eq!(r.host_ifaces, vec!["lxc1234".to_string()]);
        assert_eq!(r.sandbox.as_deref(), Some("/var/run/netns/cni-1"));
        assert_eq!(r.ips, vec!["10.0.1.23".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.label(), "default/web-1");
    }
}
