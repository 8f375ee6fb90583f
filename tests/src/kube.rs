//! deploy/kubernetes read into typed Kubernetes objects (k8s-openapi), with unknown fields
//! refused: k8s-openapi ignores fields it does not know, so each document is also serialised
//! back from its typed object and compared with the YAML as written; a field that did not
//! survive the round trip (a typo, a field of another API version, a wrong indentation) is an
//! error naming its path. The `ServiceMonitor` (a CRD, not in k8s-openapi) has a small typed
//! model here with `deny_unknown_fields`, and goes through the same round trip.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{
    api::{apps::v1::DaemonSet, batch::v1::Job, core::v1::{Namespace, Service}},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// One manifest document, typed.
#[derive(Debug, Clone)]
pub enum Object {
    Namespace(Box<Namespace>),
    DaemonSet(Box<DaemonSet>),
    Service(Box<Service>),
    Job(Box<Job>),
    ServiceMonitor(Box<ServiceMonitor>),
}

/// `monitoring.coreos.com/v1` `ServiceMonitor`: the fields deploy/kubernetes uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub any: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relabelings: Vec<Relabeling>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Relabeling {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// The repository's deploy/kubernetes.
#[must_use]
pub fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every `*.yaml` of `dir`, sorted, with its typed documents.
pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, Vec<Object>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            let objects = parse(&text).with_context(|| f.display().to_string())?;
            Ok((f, objects))
        })
        .collect()
}

/// The typed documents of one YAML stream (`---`-separated), unknown fields refused.
pub fn parse(text: &str) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).with_context(|| format!("document {}: not YAML", i + 1))?;
        if value.is_null() {
            continue;
        }
        out.push(typed(&value).with_context(|| format!("document {}", i + 1))?);
    }
    Ok(out)
}

fn typed(v: &Value) -> Result<Object> {
    let api = v["apiVersion"].as_str().unwrap_or_default();
    let kind = v["kind"].as_str().unwrap_or_default();
    Ok(match (api, kind) {
        ("v1", "Namespace") => Object::Namespace(Box::new(strict(v)?)),
        ("apps/v1", "DaemonSet") => Object::DaemonSet(Box::new(strict(v)?)),
        ("v1", "Service") => Object::Service(Box::new(strict(v)?)),
        ("batch/v1", "Job") => Object::Job(Box::new(strict(v)?)),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Object::ServiceMonitor(Box::new(strict(v)?)),
        _ => bail!("apiVersion {api:?} kind {kind:?} is not one this check knows"),
    })
}

/// `T` from `v`, refusing any field of `v` the typed object does not carry back.
pub fn strict<T: DeserializeOwned + Serialize>(v: &Value) -> Result<T> {
    let t: T = serde_json::from_value(v.clone()).context("does not deserialise")?;
    let back = serde_json::to_value(&t)?;
    let mut lost = Vec::new();
    missing(v, &back, "", &mut lost);
    if !lost.is_empty() {
        bail!("unknown or mistyped fields (lost in the typed round trip): {}", lost.join(", "));
    }
    Ok(t)
}

/// Paths of `orig` that `back` does not hold with the same value.
fn missing(orig: &Value, back: &Value, at: &str, out: &mut Vec<String>) {
    match (orig, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, ov) in o {
                let path = format!("{at}.{k}");
                match b.get(k) {
                    Some(bv) => missing(ov, bv, &path, out),
                    None => out.push(path),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) => {
            for (i, ov) in o.iter().enumerate() {
                let path = format!("{at}[{i}]");
                match b.get(i) {
                    Some(bv) => missing(ov, bv, &path, out),
                    None => out.push(path),
                }
            }
        }
        // A number written as a string or the reverse would change meaning: compare as is.
        _ if orig == back => {}
        _ => out.push(format!("{at} ({orig} became {back})")),
    }
}

/// The single `kind` object of `objects`.
pub fn only<'a, T>(objects: &'a [(PathBuf, Vec<Object>)], pick: impl Fn(&'a Object) -> Option<&'a T>) -> Result<&'a T> {
    let found: Vec<&T> = objects.iter().flat_map(|(_, o)| o.iter().filter_map(&pick)).collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => bail!("expected exactly one such object in deploy/kubernetes, found {}", found.len()),
    }
}

/// The `DaemonSet` of deploy/kubernetes.
pub fn daemonset() -> Result<DaemonSet> {
    let all = load_dir(&manifests_dir())?;
    only(&all, |o| if let Object::DaemonSet(d) = o { Some(d.as_ref()) } else { None }).cloned()
}

/// The capture `Job` of deploy/kubernetes.
pub fn capture_job() -> Result<k8s_openapi::api::batch::v1::Job> {
    let all = load_dir(&manifests_dir())?;
    only(&all, |o| if let Object::Job(j) = o { Some(j.as_ref()) } else { None }).cloned()
}
