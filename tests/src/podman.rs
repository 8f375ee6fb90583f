//! Runs a Kubernetes pod spec's container under podman, as the kubelet would run it on this
//! node: host namespaces, security context, volumes and environment translated field by field
//! from the typed object (a field this translation does not know is an error, never dropped).
//! Podman here needs runc and the cgroupfs manager, and a containers.conf without default
//! ulimits (../shared/CONTAINERS.md): [`Podman::new`] sets that up in a temporary directory.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec};

use crate::{TempDir, cmd};

/// Bound on one podman command (a load of an 80 MiB archive included).
const PODMAN_TIMEOUT: Duration = Duration::from_mins(5);

/// podman with this machine's settings.
pub struct Podman {
    conf: TempDir,
}

impl Podman {
    /// Checks podman runs at all (`podman info`); the error says why not.
    pub fn new() -> Result<Self> {
        let conf = TempDir::new("podman-conf")?;
        std::fs::write(conf.join("containers.conf"), "[containers]\ndefault_ulimits = []\n")?;
        let p = Self { conf };
        p.run(&["info", "--format", "{{.Host.OCIRuntime.Name}}"]).context("podman cannot run here")?;
        Ok(p)
    }

    /// A podman command with runc, cgroupfs and the containers.conf.
    #[must_use]
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.join("containers.conf")).args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        c
    }

    /// Runs podman with `args`, bounded; its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let mut c = self.command();
        c.args(args);
        let out = cmd::output(&mut c, None, PODMAN_TIMEOUT)?;
        if !out.status.success() {
            bail!("podman {} failed ({}): {}", args.join(" "), out.status, out.stderr.trim());
        }
        Ok(out.stdout)
    }
}

/// What the kubelet would fill in on a node, and where the test puts host paths instead.
#[derive(Debug, Default)]
pub struct NodeContext {
    /// `spec.nodeName` for the downward API.
    pub node_name: String,
    /// The pod's labels, for `metadata.labels['…']` in the downward API (a Job's `job-name`).
    pub labels: BTreeMap<String, String>,
    /// Host paths replaced by others (e.g. the dump directory by a temporary one).
    pub host_paths: BTreeMap<String, PathBuf>,
}

/// `podman run` arguments (after `run`, before the image) for `container` of `pod`, and the
/// container's arguments (after the image). hostPath volumes of type `DirectoryOrCreate` and
/// `FileOrCreate` are created here, as the kubelet does.
pub fn run_args(pod: &PodSpec, container: &Container, node: &NodeContext) -> Result<(Vec<String>, Vec<String>)> {
    let mut a: Vec<String> = Vec::new();
    if pod.host_network == Some(true) {
        a.push("--network=host".into());
    }
    if pod.host_pid == Some(true) {
        a.push("--pid=host".into());
    }
    if pod.host_ipc == Some(true) {
        a.push("--ipc=host".into());
    }
    if pod.security_context.as_ref().is_some_and(|s| s != &PodSecurityContext::default()) {
        bail!("spec.securityContext is not translated to podman (set the container's)");
    }
    security(container, &mut a)?;
    volumes(pod, container, node, &mut a)?;
    let mut env = BTreeMap::new();
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), None) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("spec.nodeName") => node.node_name.clone(),
                Some(path) if path.starts_with("metadata.labels['") && path.ends_with("']") => {
                    let key = &path["metadata.labels['".len()..path.len() - 2];
                    node.labels.get(key).cloned().with_context(|| format!("env {}: the pod has no label {key}", e.name))?
                }
                _ => bail!("env {}: only fieldRef spec.nodeName and metadata.labels['…'] are translated", e.name),
            },
            _ => bail!("env {}: neither value nor valueFrom", e.name),
        };
        a.push(format!("--env={}={value}", e.name));
        env.insert(e.name.clone(), value);
    }
    if let Some(r) = &container.resources {
        let limits = r.limits.clone().unwrap_or_default();
        if let Some(m) = limits.get("memory") {
            a.push(format!("--memory={}", quantity_bytes(&m.0)?));
        }
        if let Some(c) = limits.get("cpu") {
            a.push(format!("--cpus={}", quantity_cpus(&c.0)?));
        }
    }
    if let Some(command) = &container.command {
        let command: Vec<String> = command.iter().map(|c| expand(c, &env)).collect();
        a.push(format!("--entrypoint={}", serde_json::to_string(&command)?));
    }
    Ok((a, container.args.iter().flatten().map(|arg| expand(arg, &env)).collect()))
}

/// The kubelet's expansion of `command` and `args`: `$(NAME)` becomes the container's variable
/// NAME when it has one (else stays as written), `$$` becomes `$`.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(name) = after.strip_prefix('(').and_then(|r| r.split_once(')')).map(|(n, _)| n)
            && let Some(v) = env.get(name)
        {
            out.push_str(v);
            rest = &after[name.len() + 2..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn security(container: &Container, a: &mut Vec<String>) -> Result<()> {
    let Some(s) = &container.security_context else { return Ok(()) };
    if s.privileged == Some(true) {
        a.push("--privileged".into());
    }
    if s.allow_privilege_escalation == Some(false) {
        a.push("--security-opt=no-new-privileges".into());
    }
    match (s.run_as_user, s.run_as_group) {
        (Some(u), Some(g)) => a.push(format!("--user={u}:{g}")),
        (Some(u), None) => a.push(format!("--user={u}")),
        (None, None) => {}
        (None, Some(_)) => bail!("runAsGroup without runAsUser is not translated"),
    }
    if s.run_as_non_root == Some(true) {
        bail!("runAsNonRoot is not translated");
    }
    if s.read_only_root_filesystem == Some(true) {
        // Kubernetes adds no tmpfs of its own; podman's --read-only would (/tmp, /run, …).
        a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if let Some(caps) = &s.capabilities {
        for c in caps.drop.iter().flatten() {
            a.push(format!("--cap-drop={}", cap_name(c)));
        }
        for c in caps.add.iter().flatten() {
            a.push(format!("--cap-add={}", cap_name(c)));
        }
    }
    match s.seccomp_profile.as_ref().map(|p| p.type_.as_str()) {
        // The runtime's default profile: podman's, as containerd's under the kubelet.
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => a.push("--security-opt=seccomp=unconfined".into()),
        Some(other) => bail!("seccompProfile {other} is not translated"),
    }
    if s.se_linux_options.is_some() || s.app_armor_profile.is_some() || s.proc_mount.is_some() || s.windows_options.is_some() {
        bail!("seLinuxOptions, appArmorProfile, procMount and windowsOptions are not translated");
    }
    Ok(())
}

/// `BPF` → `CAP_BPF`; `ALL` stays.
fn cap_name(c: &str) -> String {
    if c == "ALL" || c.starts_with("CAP_") { c.to_string() } else { format!("CAP_{c}") }
}

fn volumes(pod: &PodSpec, container: &Container, node: &NodeContext, a: &mut Vec<String>) -> Result<()> {
    let vols = pod.volumes.clone().unwrap_or_default();
    for m in container.volume_mounts.iter().flatten() {
        let v = vols.iter().find(|v| v.name == m.name).with_context(|| format!("volumeMount {} names no volume", m.name))?;
        if m.sub_path.is_some() || m.sub_path_expr.is_some() {
            bail!("volumeMount {}: subPath is not translated", m.name);
        }
        if let Some(hp) = &v.host_path {
            let host = node.host_paths.get(&hp.path).cloned().unwrap_or_else(|| PathBuf::from(&hp.path));
            match hp.type_.as_deref() {
                Some("DirectoryOrCreate") => std::fs::create_dir_all(&host).with_context(|| format!("creating {}", host.display()))?,
                Some("FileOrCreate") if !host.exists() => {
                    std::fs::write(&host, b"").with_context(|| format!("creating {}", host.display()))?;
                }
                Some("Directory") if !host.is_dir() => bail!("hostPath {} is not a directory", host.display()),
                Some("File") if !host.is_file() => bail!("hostPath {} is not a file", host.display()),
                None | Some("" | "Directory" | "File" | "FileOrCreate") => {}
                Some(t) => bail!("hostPath type {t} is not translated"),
            }
            let mut opts = vec![if m.read_only == Some(true) { "ro" } else { "rw" }];
            match m.mount_propagation.as_deref() {
                None | Some("None") => opts.push("rprivate"),
                Some("HostToContainer") => opts.push("rslave"),
                Some("Bidirectional") => opts.push("rshared"),
                Some(p) => bail!("mountPropagation {p} is not known"),
            }
            a.push(format!("--volume={}:{}:{}", host.display(), m.mount_path, opts.join(",")));
        } else if let Some(ed) = &v.empty_dir {
            // A fresh empty directory per pod; a tmpfs either way here (medium Memory, or the
            // node's disk, which a test does not need to fill).
            let mut opts = vec!["rw".to_string(), "mode=1777".into()];
            if let Some(limit) = &ed.size_limit {
                opts.push(format!("size={}", quantity_bytes(&limit.0)?));
            }
            a.push(format!("--tmpfs={}:{}", m.mount_path, opts.join(",")));
        } else {
            bail!("volume {}: only hostPath and emptyDir are translated", v.name);
        }
    }
    Ok(())
}

/// `256Mi` → bytes.
pub fn quantity_bytes(q: &str) -> Result<u64> {
    let units: &[(&str, u64)] = &[("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("k", 1000), ("M", 1_000_000), ("G", 1_000_000_000)];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>().with_context(|| format!("quantity {q}"))? * mult);
        }
    }
    q.parse().with_context(|| format!("quantity {q} is not translated"))
}

/// `1` → `1`, `500m` → `0.5`.
pub fn quantity_cpus(q: &str) -> Result<String> {
    if let Some(m) = q.strip_suffix('m') {
        let m: u64 = m.parse().with_context(|| format!("cpu quantity {q}"))?;
        return Ok(format!("{}.{:03}", m / 1000, m % 1000));
    }
    q.parse::<f64>().with_context(|| format!("cpu quantity {q}"))?;
    Ok(q.to_string())
}

/// The host path a container path is mounted from, if any.
#[must_use]
pub fn host_path_of(args: &[String], container_path: &str) -> Option<PathBuf> {
    args.iter().filter_map(|a| a.strip_prefix("--volume=")).find_map(|v| {
        let mut it = v.split(':');
        let (host, ctr) = (it.next()?, it.next()?);
        (ctr == container_path).then(|| Path::new(host).to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity_bytes("256Mi").unwrap(), 256 << 20);
        assert_eq!(quantity_bytes("16Mi").unwrap(), 16 << 20);
        assert_eq!(quantity_bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(quantity_bytes("4096").unwrap(), 4096);
        assert!(quantity_bytes("1.5Gi").is_err());
        assert_eq!(quantity_cpus("1").unwrap(), "1");
        assert_eq!(quantity_cpus("50m").unwrap(), "0.050");
        assert_eq!(quantity_cpus("1500m").unwrap(), "1.500");
        assert!(quantity_cpus("x").is_err());
    }

    #[test]
    fn variable_expansion() {
        let env = BTreeMap::from([("JOB_NAME".to_string(), "cap-1".to_string())]);
        assert_eq!(expand("--bundle=/x/$(JOB_NAME)", &env), "--bundle=/x/cap-1");
        assert_eq!(expand("$(JOB_NAME)$(JOB_NAME)", &env), "cap-1cap-1");
        assert_eq!(expand("$(OTHER) $$(JOB_NAME) $", &env), "$(OTHER) $(JOB_NAME) $");
        assert_eq!(expand("$(JOB_NAME", &env), "$(JOB_NAME");
    }

    #[test]
    fn capability_names() {
        assert_eq!(cap_name("BPF"), "CAP_BPF");
        assert_eq!(cap_name("CAP_BPF"), "CAP_BPF");
        assert_eq!(cap_name("ALL"), "ALL");
    }
}
