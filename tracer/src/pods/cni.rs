//! libcni's result cache (`/var/lib/cni/results/<network>-<containerID>-<ifName>`), written by
//! containerd and cri-o for every pod sandbox: JSON of kind `cniCacheV1` with the runtime
//! arguments (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`…) and the plugin's result (interfaces with
//! their `sandbox` netns path, IPs). Parsing never panics: a file that is not such a cache
//! entry is an error value, never a crash (the directory is written by other programs).
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Bigger files are not cache entries (real ones are a few KiB).
const MAX_FILE: u64 = 1 << 20;
/// Bound on the entries read from one directory.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniInterface {
    pub name: String,
    pub mac: Option<String>,
    /// Network namespace path for interfaces inside the pod; None on the host side.
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The cache file's name (set by `read_dir`).
    pub file: String,
    pub container_id: String,
    pub network: String,
    /// The pod-side interface name (`eth0`).
    pub if_name: String,
    /// The sandbox's network namespace (`netns`, else an interface's `sandbox`).
    pub netns: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub interfaces: Vec<CniInterface>,
    pub ips: Vec<IpAddr>,
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
}

/// "10.0.1.5/32" or "10.0.1.5" → the address.
fn addr_of(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.trim().parse().ok()
}

/// One cache file's content.
pub fn parse(bytes: &[u8]) -> Result<CacheEntry, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if v.get("kind").and_then(Value::as_str) != Some("cniCacheV1") {
        return Err("not a libcni cache entry (kind is not cniCacheV1)".into());
    }
    let container_id = str_of(&v, "containerId").ok_or("no containerId")?;
    let if_name = str_of(&v, "ifName").ok_or("no ifName")?;
    let network = str_of(&v, "networkName").unwrap_or_default();
    let mut e = CacheEntry {
        file: String::new(),
        container_id,
        network,
        if_name,
        netns: str_of(&v, "netns"),
        pod_namespace: None,
        pod_name: None,
        interfaces: Vec::new(),
        ips: Vec::new(),
    };
    // cniArgs: [["K8S_POD_NAMESPACE", "default"], …]
    for pair in v.get("cniArgs").and_then(Value::as_array).into_iter().flatten() {
        let (Some(k), Some(val)) = (pair.get(0).and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) else { continue };
        match k {
            "K8S_POD_NAMESPACE" if !val.is_empty() => e.pod_namespace = Some(val.to_string()),
            "K8S_POD_NAME" if !val.is_empty() => e.pod_name = Some(val.to_string()),
            _ => {}
        }
    }
    if let Some(result) = v.get("result") {
        for i in result.get("interfaces").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = str_of(i, "name") else { continue };
            e.interfaces.push(CniInterface { name, mac: str_of(i, "mac"), sandbox: str_of(i, "sandbox") });
        }
        // CNI ≥ 0.3: "ips": [{"address": "10.0.1.5/32", "interface": 1}]
        for ip in result.get("ips").and_then(Value::as_array).into_iter().flatten() {
            if let Some(a) = ip.get("address").and_then(Value::as_str).and_then(addr_of) {
                e.ips.push(a);
            }
        }
        // CNI 0.1/0.2: "ip4": {"ip": "10.0.1.5/24"}, "ip6": {…}
        for fam in ["ip4", "ip6"] {
            if let Some(a) = result.get(fam).and_then(|f| f.get("ip")).and_then(Value::as_str).and_then(addr_of) {
                e.ips.push(a);
            }
        }
    }
    if e.netns.is_none() {
        let sandbox = |i: &&CniInterface| i.sandbox.is_some();
        e.netns = e
            .interfaces
            .iter()
            .filter(sandbox)
            .find(|i| i.name == e.if_name)
            .or_else(|| e.interfaces.iter().find(sandbox))
            .and_then(|i| i.sandbox.clone());
    }
    e.ips.sort();
    e.ips.dedup();
    Ok(e)
}

/// Where cache files are: `DIR/results` (libcni's layout), else `DIR` itself.
pub fn results_dir(dir: &Path) -> PathBuf {
    let r = dir.join("results");
    if r.is_dir() { r } else { dir.to_path_buf() }
}

/// Files that were not cache entries: (file name, why).
pub type Skipped = Vec<(String, String)>;

/// Every cache entry under `dir`, and the files that were not entries.
pub fn read_dir(dir: &Path) -> Result<(Vec<CacheEntry>, Skipped)> {
    let results = results_dir(dir);
    if !dir.exists() {
        bail!(
            "the CNI cache directory {} does not exist: pods are named from the cache containerd/cri-o keep (libcni); give its location with --cni-cache-dir",
            dir.display()
        );
    }
    let rd = std::fs::read_dir(&results).with_context(|| format!("cannot read the CNI cache directory {}", results.display()))?;
    let mut files: Vec<_> = rd.flatten().take(MAX_ENTRIES).map(|e| e.path()).collect();
    files.sort();
    let (mut entries, mut bad) = (Vec::new(), Vec::new());
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Ok(meta) = std::fs::metadata(&f) else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_FILE {
            bad.push((name, "too large".into()));
            continue;
        }
        match std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| parse(&b)) {
            Ok(e) => entries.push(CacheEntry { file: name, ..e }),
            Err(e) => bad.push((name, e)),
        }
    }
    Ok((entries, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As libcni writes it for a Cilium pod (config is base64 of the network config).
    pub const SAMPLE: &str = r#"{"kind":"cniCacheV1","containerId":"5c0a11d2e3f4","config":"eyJ0eXBlIjoiY2lsaXVtLWNuaSJ9","ifName":"eth0","networkName":"cilium","netns":"/var/run/netns/cni-1234","cniArgs":[["K8S_POD_INFRA_CONTAINER_ID","5c0a11d2e3f4"],["K8S_POD_UID","u-1"],["IgnoreUnknown","1"],["K8S_POD_NAMESPACE","default"],["K8S_POD_NAME","web-0"]],"result":{"cniVersion":"1.0.0","interfaces":[{"name":"lxc5c0a11","mac":"aa:bb:cc:dd:ee:01"},{"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/var/run/netns/cni-1234"}],"ips":[{"address":"10.0.1.23/32","interface":1},{"address":"fd00::17/128","interface":1}],"routes":[{"dst":"0.0.0.0/0"}]}}"#;

    #[test]
    fn parses_a_cilium_entry() {
        let e = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(e.pod_namespace.as_deref(), Some("default"));
        assert_eq!(e.pod_name.as_deref(), Some("web-0"));
        assert_eq!(e.if_name, "eth0");
        assert_eq!(e.network, "cilium");
        assert_eq!(e.netns.as_deref(), Some("/var/run/netns/cni-1234"));
        assert_eq!(e.interfaces[0], CniInterface { name: "lxc5c0a11".into(), mac: Some("aa:bb:cc:dd:ee:01".into()), sandbox: None });
        assert_eq!(e.ips, vec!["10.0.1.23".parse::<IpAddr>().unwrap(), "fd00::17".parse().unwrap()]);
    }

    #[test]
    fn netns_from_sandbox_and_old_results() {
        let s = r#"{"kind":"cniCacheV1","containerId":"c1","ifName":"eth0","cniArgs":[["K8S_POD_NAMESPACE","kube-system"],["K8S_POD_NAME","dns"]],"result":{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.9/24"},"interfaces":[{"name":"eth0","sandbox":"/proc/42/ns/net"}]}}"#;
        let e = parse(s.as_bytes()).unwrap();
        assert_eq!(e.netns.as_deref(), Some("/proc/42/ns/net"));
        assert_eq!(e.ips, vec!["10.1.0.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn rejects_what_is_not_an_entry() {
        for s in ["", "[]", "{}", r#"{"kind":"x"}"#, r#"{"kind":"cniCacheV1"}"#, r#"{"cniVersion":"0.4.0","ips":[]}"#] {
            assert!(parse(s.as_bytes()).is_err(), "{s}");
        }
    }

    #[test]
    fn never_panics_on_mangled_input() {
        // Every prefix, and every single-byte change to a few interesting bytes.
        let b = SAMPLE.as_bytes();
        for n in 0..b.len() {
            let _ = parse(&b[..n]);
        }
        let mut seed = 0x2545_f491_u32;
        for _ in 0..5000 {
            let mut m = b.to_vec();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let i = seed as usize % m.len();
                m[i] = seed.to_le_bytes()[1];
            }
            let _ = parse(&m);
        }
        // Wrong types everywhere.
        let s = r#"{"kind":"cniCacheV1","containerId":"c","ifName":"e","cniArgs":[1,[2],["K8S_POD_NAME"],{"a":1}],"result":{"interfaces":{"x":1},"ips":[{"address":7},"x"],"ip4":[]}}"#;
        let e = parse(s.as_bytes()).unwrap();
        assert!(e.pod_name.is_none() && e.ips.is_empty() && e.interfaces.is_empty());
    }
}
