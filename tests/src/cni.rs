//! A libcni cache for a testbed node's pods, as the tracer reads pods from it (`--cni-cache-dir`).
use anyhow::Result;
use serde_json::json;

use crate::{Node, TempDir};

/// The pod's addresses as the CNI result lists them (IPv6 too on a dual-stack node), on the
/// pod's interface (index 1).
fn ips(p: &crate::Pod) -> serde_json::Value {
    let mut ips = vec![json!({"address": format!("{}/32", p.ip), "interface": 1})];
    if let Some(ip6) = p.ip6 {
        ips.push(json!({"address": format!("{ip6}/128"), "interface": 1}));
    }
    json!(ips)
}

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A libcni cache directory (`DIR/results/<network>-<containerID>-<ifName>`) with one
/// `cniCacheV1` entry per pod of `node`, named `default/web-<index>`, as containerd writes them
/// for Cilium pods. Without `host_side` the result lists only the pod's own interface (as some
/// plugins write it), so the tracer must find the lxc as the veth peer.
pub fn cni_cache(node: &Node, host_side: bool) -> Result<TempDir> {
    let dir = TempDir::new("tb-cni")?;
    let results = dir.join("results");
    std::fs::create_dir(&results)?;
    for p in node.pods() {
        let cid = format!("{:064x}", 0xc0ff_ee00_u64 + p.index as u64);
        let sandbox = p.netns_path().display().to_string();
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": cid,
            // base64 of {"cniVersion":"1.0.0","name":"cilium","type":"cilium-cni"}
            "config": "eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiY2lsaXVtIiwidHlwZSI6ImNpbGl1bS1jbmkifQ==",
            "ifName": "eth0",
            "networkName": "cilium",
            "netns": sandbox,
            "cniArgs": [
                ["K8S_POD_INFRA_CONTAINER_ID", cid],
                ["K8S_POD_UID", format!("uid-{}", p.index)],
                ["IgnoreUnknown", "1"],
                ["K8S_POD_NAMESPACE", "default"],
                ["K8S_POD_NAME", format!("web-{}", p.index)],
            ],
            "result": {
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": p.lxc, "mac": mac(p.lxc_mac)},
                    {"name": p.eth, "mac": mac(p.eth_mac), "sandbox": sandbox},
                ],
                "ips": ips(p),
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        });
        let mut entry = entry;
        if !host_side {
            entry["result"]["interfaces"].as_array_mut().unwrap().remove(0);
            for ip in entry["result"]["ips"].as_array_mut().unwrap() {
                ip["interface"] = json!(0);
            }
        }
        std::fs::write(results.join(format!("cilium-{cid}-eth0")), serde_json::to_vec(&entry)?)?;
    }
    Ok(dir)
}
