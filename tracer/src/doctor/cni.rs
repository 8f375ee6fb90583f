//! The CNI results libcni caches per pod interface (`/var/lib/cni/results/<net>-<id>-<if>`):
//! the node's own record of which pods it set up, their IPs and host-side interfaces.
//! Both the `cniCacheV1` envelope (`{"kind":"cniCacheV1",…,"result":{…}}`) and a bare result
//! are read.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// Results read at most (a node has at most a few hundred pods; this bounds a corrupt dir).
const MAX_RESULTS: usize = 100_000;

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
        self.pod.clone().unwrap_or_else(|| format!("container {}", short(&self.container_id)))
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[derive(Debug, Clone, Default)]
pub struct CniCache {
    pub dir: PathBuf,
    pub results: Vec<PodResult>,
    /// Files that could not be read as a CNI result.
    pub unreadable: Vec<String>,
}

/// The results directory for `--cni-cache-dir DIR`: DIR itself, or DIR/results when DIR is
/// libcni's cache root.
pub fn results_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("results");
    if nested.is_dir() { nested } else { dir.to_path_buf() }
}

/// `None` when the directory does not exist (no CNI on this node, or a different path).
pub fn load(dir: &Path) -> Option<CniCache> {
    let dir = results_dir(dir);
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut cache = CniCache { dir: dir.clone(), ..CniCache::default() };
    for e in entries.flatten().take(MAX_RESULTS) {
        let path = e.path();
        if !path.is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        match std::fs::read_to_string(&path).ok().and_then(|t| parse(&name, &t)) {
            Some(r) => cache.results.push(r),
            None => cache.unreadable.push(name),
        }
    }
    cache.results.sort_by(|a, b| a.file.cmp(&b.file));
    Some(cache)
}

pub fn parse(file: &str, text: &str) -> Option<PodResult> {
    let v: Value = serde_json::from_str(text).ok()?;
    let result = if v.get("result").is_some_and(Value::is_object) { &v["result"] } else { &v };
    if result.get("ips").is_none() && result.get("interfaces").is_none() {
        return None;
    }
    let mut r = PodResult { file: file.to_string(), container_id: v["containerId"].as_str().unwrap_or("").to_string(), ..PodResult::default() };
    if let Some(args) = v["cniArgs"].as_array() {
        let arg = |k: &str| {
            args.iter().find_map(|p| {
                let p = p.as_array()?;
                (p.first()?.as_str()? == k).then(|| p.get(1)?.as_str().map(str::to_string)).flatten()
            })
        };
        if let (Some(ns), Some(name)) = (arg("K8S_POD_NAMESPACE"), arg("K8S_POD_NAME")) {
            r.pod = Some(format!("{ns}/{name}"));
        }
    }
    for i in result["interfaces"].as_array().into_iter().flatten() {
        let name = i["name"].as_str().unwrap_or("").to_string();
        match i["sandbox"].as_str().filter(|s| !s.is_empty()) {
            Some(sb) => r.sandbox = Some(sb.to_string()),
            None if !name.is_empty() => r.host_ifaces.push(name),
            None => {}
        }
    }
    for ip in result["ips"].as_array().into_iter().flatten() {
        if let Some(addr) = ip["address"].as_str() {
            let bare = addr.split('/').next().unwrap_or(addr);
            if let Ok(a) = bare.parse() {
                r.ips.push(a);
            }
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cache_envelope_and_bare_results() {
        let env = r#"{"kind":"cniCacheV1","containerId":"0123456789abcdef","ifName":"eth0","networkName":"cilium",
            "cniArgs":[["K8S_POD_NAMESPACE","default"],["K8S_POD_NAME","web-1"]],
            "result":{"cniVersion":"0.3.1","interfaces":[{"name":"lxc1234","mac":"aa:bb:cc:dd:ee:ff"},
            {"name":"eth0","mac":"","sandbox":"/var/run/netns/cni-1"}],"ips":[{"address":"10.0.1.23/32","interface":1}]}}"#;
        let r = parse("cilium-0123-eth0", env).unwrap();
        assert_eq!(r.pod.as_deref(), Some("default/web-1"));
        assert_eq!(r.host_ifaces, vec!["lxc1234".to_string()]);
        assert_eq!(r.sandbox.as_deref(), Some("/var/run/netns/cni-1"));
        assert_eq!(r.ips, vec!["10.0.1.23".parse::<IpAddr>().unwrap()]);
        let bare = r#"{"cniVersion":"0.3.1","ips":[{"address":"fd00::5/128"}]}"#;
        let r = parse("x", bare).unwrap();
        assert_eq!(r.label(), "container ");
        assert_eq!(r.ips.len(), 1);
        assert!(parse("y", "{}").is_none());
        assert!(parse("z", "not json").is_none());
    }
}
