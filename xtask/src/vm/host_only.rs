//! Tests the guests leave out: their outcome does not depend on the kernel (input validation,
//! output files, the harness itself), and `cargo xtask test` has proven them on the host. The
//! guests run under TCG at a fraction of the host's speed, so every test there is dear.
//!
//! Each name is checked against the test binary's own `--list` before a guest boots: a renamed
//! or removed test is an error here, never a silent change of what the guests run.
use std::{collections::BTreeSet, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

/// (suite, test, why the kernel does not matter).
pub const HOST_ONLY: &[(&str, &str, &str)] = &[
    ("drops", "bad_expression_is_one_line_and_no_files", "libpcap compiles the expression before any BPF"),
    ("drops", "unknown_interface_is_one_line_and_no_files", "refused before anything is loaded"),
    ("drops", "not_root_is_one_line_and_no_files", "refused before anything is loaded"),
    ("drops", "unwritable_output_is_one_line_and_no_files", "refused before anything is loaded"),
    ("drops", "unknown_netns_is_one_line_and_no_files", "refused before anything is loaded"),
    ("drops", "sigterm_stops_like_sigint", "signal handling in userspace; robust's sigterm test covers the kernel side"),
    ("drops", "duration_ends_the_capture_with_outputs", "a userspace timer; robust's duration test covers the kernel side"),
    ("pods", "cache_files_are_libcni_format", "the harness's CNI cache writer"),
    ("pods", "missing_cni_cache_is_a_clear_error", "refused before anything is loaded"),
    ("pods", "unknown_pod_is_a_clear_error_with_close_matches", "refused before anything is loaded"),
    ("robust", "bad_input_table", "refused before anything is loaded (fake BTF and tracefs included)"),
    ("robust", "full_disk_stops_one_output_and_counts_exactly", "userspace output writing"),
    ("robust", "closed_stdout_stops_json_only", "userspace output writing"),
    ("robust", "missing_tools_are_named_and_the_capture_goes_on", "PATH lookups in userspace"),
    // Every way a run ends detaches the same way in the kernel: SIGINT (the Drop path), SIGKILL
    // (the next run's cleanup) and a panic (unwinding) stay in the guests.
    ("robust", "sigterm_leaves_nothing_and_complete_outputs", "the SIGINT test's kernel cleanup; which signal stops the run is userspace"),
    ("robust", "duration_leaves_nothing_and_complete_outputs", "the SIGINT test's kernel cleanup; the timer that ends the run is userspace"),
    ("testbed", "missing_tracer_bin_is_a_clear_error", "the harness's own error"),
    ("testbed", "node_is_removed_on_panic", "the harness's own cleanup"),
    ("doctor", "unknown_map_layout_is_refused", "a pinned map's key and value sizes, read the same on every kernel"),
    ("doctor", "bundle_refuses_a_non_empty_directory", "refused before anything is loaded"),
    ("report", "net_log_sees_a_page_request", "Chromium and a static page (the guests have no Chromium)"),
    ("report", "single_node_capture_directory", "renders output files; the capture in it is covered by drops"),
    ("report", "bundle_with_ruleset_change", "renders a bundle; the bundle itself is covered by doctor"),
    ("report", "two_nodes", "renders output files"),
    ("report", "capture_without_drops", "renders output files"),
    ("report", "damaged_archive_is_one_line_and_writes_nothing", "reads a file, loads nothing"),
    ("merge", "bad_inputs_are_one_line_and_write_nothing", "reads files, loads nothing; its one capture is covered by drops"),
    ("merge", "two_nodes_one_story", "merging is userspace; its captures' kernel side (--netns, --path --all) is covered by drops and path"),
    ("merge", "watch_dump_and_capture_directory", "needs curl and python3-prometheus-client (not in the guests); merging is userspace"),
    // The watch suite reads /metrics with curl and Python's prometheus_client parser, which the
    // guests do not carry; its kernel side (the DROP_STATS netfilter slot) is one lookup the
    // netfilter suite's attribution covers there.
    ("watch", "intermittent_rule_dumps_once_per_burst", "needs curl and python3-prometheus-client (not in the guests)"),
    ("watch", "sigusr1_and_post_dump", "needs curl and python3-prometheus-client (not in the guests)"),
    ("watch", "pod_created_after_start_is_named", "needs curl and python3-prometheus-client (not in the guests)"),
    ("watch", "max_series_folds_into_other", "needs curl and python3-prometheus-client (not in the guests)"),
    ("watch", "disk_full_fails_that_dump_only", "userspace dump writing; needs curl and python3-prometheus-client"),
    ("watch", "bad_input_exits_before_attaching", "refused before anything is loaded"),
    ("watch", "dump_token_is_required_when_given", "HTTP in userspace; needs curl and python3-prometheus-client"),
    ("watch", "sigterm_exits_zero_and_detaches", "needs curl (not in the guests); robust's sigterm test covers the kernel side"),
    ("watch", "forwarded_drops_count_per_rule_without_a_forward_observer", "needs curl and python3-prometheus-client (not in the guests); its kernel side, the forwarded flag, runs there in netfilter's forwarded_drop_is_named_from_its_route_without_a_forward_observer"),
    ("watch", "ready_before_the_rules_are_listed", "needs curl and python3-prometheus-client (not in the guests); the netlink counter reads by chain run there in slow_rulesets"),
    // A start-up time bound on a 20,000-rule node: the host's speed, not the kernel's; the
    // attribution it also checks runs in the guests in the netfilter suite.
    ("scale", "ready_fast_and_exact_with_20000_rules_and_100_pod_namespaces", "a ready-time bound of the machine (TCG guests are far slower); attribution is covered by netfilter"),
    // The image and the manifests: podman (not in the guests) and files of the repository.
    ("image", "archive_is_docker_and_oci_and_loads", "podman and skopeo (not in the guests) read an archive"),
    ("image", "containerd_imports_it_under_the_kubelets_name", "containerd (not in the guests) reads an archive"),
    ("image", "capture_job_container_leaves_a_bundle", "podman (not in the guests); the drops suite covers capture's kernel side"),
    ("image", "daemonset_container_counts_a_planted_drop_and_dumps_it", "podman (not in the guests); the watch suite covers the tracer's kernel side"),
    ("manifests", "every_manifest_is_typed_with_no_unknown_field", "reads deploy/kubernetes, loads nothing"),
    ("manifests", "planted_typos_are_refused", "reads deploy/kubernetes, loads nothing"),
    ("manifests", "daemonset_runs_watch_as_the_issue_asks", "reads deploy/kubernetes, loads nothing"),
    ("manifests", "namespace_and_capture_job", "reads deploy/kubernetes, loads nothing"),
];

/// `--skip` arguments for one suite's binary, after checking every name against its `--list`.
pub fn skip_args(suite: &str, exe: &Path) -> Result<Vec<String>> {
    let names: Vec<&str> = HOST_ONLY.iter().filter(|(s, ..)| *s == suite).map(|(_, t, _)| *t).collect();
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("listing the tests of {}", exe.display()))?;
    if !out.status.success() {
        bail!("{} --list failed ({})", exe.display(), out.status);
    }
    let listed: BTreeSet<&str> = std::str::from_utf8(&out.stdout)?
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .collect();
    let mut args = Vec::new();
    for n in names {
        if !listed.contains(n) {
            bail!("xtask/src/vm/host_only.rs names {suite}::{n}, which {} does not have", exe.display());
        }
        // --exact is not set (a --test filter may be a substring), so a skip must not be a part
        // of another test's name, or it would leave that one out too.
        if let Some(other) = listed.iter().find(|l| **l != n && l.contains(n)) {
            bail!("host-only test {suite}::{n} is part of another test's name ({other}); rename one");
        }
        args.extend(["--skip".to_string(), n.to_string()]);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_once_with_a_reason() {
        let mut seen = BTreeSet::new();
        for (suite, test, why) in HOST_ONLY {
            assert!(seen.insert((suite, test)), "{suite}::{test} twice");
            assert!(!why.is_empty(), "{suite}::{test} needs a reason");
        }
    }
}
