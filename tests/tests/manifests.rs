//! deploy/kubernetes checked as Kubernetes would read it: every document deserialised into its
//! typed object (k8s-openapi; the `ServiceMonitor` CRD through a typed model) with unknown
//! fields refused, then what issue 14 asks of the `DaemonSet` and the Job, field by field. Plain
//! file reading: no root, no kernel.
use std::collections::BTreeSet;

use integration_tests::kube::{self, Object};
use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::PodSpec};

fn all() -> Vec<(std::path::PathBuf, Vec<Object>)> {
    kube::load_dir(&kube::manifests_dir()).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn every_manifest_is_typed_with_no_unknown_field() {
    let all = all();
    let kinds: BTreeSet<&str> = all
        .iter()
        .flat_map(|(_, o)| o.iter())
        .map(|o| match o {
            Object::Namespace(_) => "Namespace",
            Object::DaemonSet(_) => "DaemonSet",
            Object::Service(_) => "Service",
            Object::Job(_) => "Job",
            Object::ServiceMonitor(_) => "ServiceMonitor",
        })
        .collect();
    assert_eq!(kinds, BTreeSet::from(["Namespace", "DaemonSet", "Service", "Job", "ServiceMonitor"]));
    for (file, objects) in &all {
        assert!(!objects.is_empty(), "{} holds no object", file.display());
    }
}

/// The unknown-field check catches typos the typed deserialisation alone would ignore.
#[test]
fn planted_typos_are_refused() {
    let text = std::fs::read_to_string(kube::manifests_dir().join("daemonset.yaml")).unwrap();
    kube::parse(&text).unwrap();
    for (right, wrong) in [
        ("mountPropagation: HostToContainer", "mountPropogation: HostToContainer"),
        ("hostNetwork: true", "hostNetwrok: true"),
        ("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"),
        ("priorityClassName:", "priorityClass:"),
        // Valid YAML, wrong place: a key indented into the toleration above it.
        ("      terminationGracePeriodSeconds: 30", "          tolerations: []\n      terminationGracePeriodSeconds: 30"),
    ] {
        assert!(text.contains(right), "{right}");
        let planted = text.replacen(right, wrong, 1);
        let err = kube::parse(&planted).map(|_| ()).expect_err(wrong);
        let field = wrong.split(':').next().unwrap().trim();
        assert!(format!("{err:#}").contains(field), "{wrong}: {err:#}");
    }
    let sm = std::fs::read_to_string(kube::manifests_dir().join("servicemonitor.yaml")).unwrap();
    let err = kube::parse(&sm.replacen("targetLabel:", "targetLable:", 1)).expect_err("ServiceMonitor typo");
    assert!(format!("{err:#}").contains("targetLable"), "{err:#}");
}

fn daemonset() -> DaemonSet {
    kube::daemonset().unwrap_or_else(|e| panic!("{e:#}"))
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

/// What issue 14 asks of the `DaemonSet`.
#[test]
fn daemonset_runs_watch_as_the_issue_asks() {
    let ds = daemonset();
    assert_eq!(ds.metadata.namespace.as_deref(), Some("tracer"));
    let pod = pod_spec(&ds);
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.host_pid, Some(true));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-node-critical"));
    let tol = pod.tolerations.as_ref().unwrap();
    assert!(tol.iter().any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()), "a toleration of every taint: {tol:?}");
    let [c] = pod.containers.as_slice() else { panic!("one container") };
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "watch");
    assert!(args.iter().any(|a| a.starts_with("--listen=")));
    assert!(!args.iter().any(|a| a.contains("--dump-token-file")) || args.iter().any(|a| a.starts_with("--listen=127.")), "token file given: documented");
    let sc = c.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    for cap in ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"] {
        assert!(caps.add.as_ref().unwrap().iter().any(|c| c == cap), "{cap}");
    }
    let env = c.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(node.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "spec.nodeName");
    let probe = |p: Option<&k8s_openapi::api::core::v1::Probe>| p.and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
    assert_eq!(probe(c.liveness_probe.as_ref()).as_deref(), Some("/healthz"));
    assert_eq!(probe(c.readiness_probe.as_ref()).as_deref(), Some("/readyz"));
    let r = c.resources.as_ref().unwrap();
    assert!(r.requests.as_ref().unwrap().contains_key("memory") && r.limits.as_ref().unwrap().contains_key("memory"));
    let ann = ds.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.clone().unwrap();
    assert_eq!(ann.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(ann.get("prometheus.io/port").map(String::as_str), Some("9477"));

    let vols = pod.volumes.as_ref().unwrap();
    let mount = |path: &str| c.volume_mounts.as_ref().unwrap().iter().find(|m| m.mount_path == path).unwrap_or_else(|| panic!("no mount at {path}"));
    let host = |name: &str| vols.iter().find(|v| v.name == name).unwrap().host_path.as_ref().unwrap().path.clone();
    assert_eq!(host(&mount("/sys/fs/bpf").name), "/sys/fs/bpf");
    let netns = mount("/var/run/netns");
    assert_eq!(netns.mount_propagation.as_deref(), Some("HostToContainer"));
    assert_eq!(host(&netns.name), "/var/run/netns");
    let cni = mount("/var/lib/cni");
    assert_eq!(cni.read_only, Some(true));
    assert_eq!(host(&mount("/run/xtables.lock").name), "/run/xtables.lock");
    // The dump directory watch writes to is on a hostPath.
    let dump_dir = args.iter().find_map(|a| a.strip_prefix("--dump-dir=")).unwrap();
    let dump_mount = c.volume_mounts.as_ref().unwrap().iter().filter(|m| dump_dir.starts_with(&m.mount_path)).max_by_key(|m| m.mount_path.len()).unwrap();
    assert!(vols.iter().find(|v| v.name == dump_mount.name).unwrap().host_path.is_some());
}

/// The namespace is labelled for `PodSecurity` `privileged`; the Job runs `capture` on one node
/// with the `DaemonSet`'s security context and host namespaces.
#[test]
fn namespace_and_capture_job() {
    let all = all();
    let ns = kube::only(&all, |o| if let Object::Namespace(n) = o { Some(n.as_ref()) } else { None }).unwrap();
    let labels = ns.metadata.labels.clone().unwrap();
    assert_eq!(labels.get("pod-security.kubernetes.io/enforce").map(String::as_str), Some("privileged"));
    let job = kube::only(&all, |o| if let Object::Job(j) = o { Some(j.as_ref()) } else { None }).unwrap();
    let jpod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert!(jpod.node_name.is_some() || jpod.node_selector.is_some());
    assert_eq!(jpod.restart_policy.as_deref(), Some("Never"));
    let jc = &jpod.containers[0];
    assert_eq!(jc.args.as_ref().unwrap()[0], "capture");
    assert!(jc.args.as_ref().unwrap().iter().any(|a| a.starts_with("--duration=")));
    let ds = daemonset();
    let dpod = pod_spec(&ds);
    assert_eq!(jc.security_context, dpod.containers[0].security_context, "the Job's securityContext is the DaemonSet's");
    assert_eq!((jpod.host_network, jpod.host_pid), (dpod.host_network, dpod.host_pid));
}
