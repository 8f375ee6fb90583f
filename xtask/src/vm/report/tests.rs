use super::*;

const PORT: &str = "VMTEST kernel 6.1.0-50-cloud-amd64\r\n\
VMTEST boot-seconds 3.52\n\
VMTEST cpu cpu  600 0 200 150 50 0 0 0 0 0\n\
VMTEST modprobe-failed nft_counter\n\
{\"detail\":\"fentry attached to tcp_v4_rcv\",\"name\":\"fentry\",\"ok\":true,\"type\":\"probe\"}\n\
{\"detail\":\"tcx attach refused: x\",\"name\":\"tcx\",\"ok\":false,\"type\":\"probe\"}\n\
VMTEST tracer-summary {\"probe\": \"tp_btf\", \"drops\": 0}\n\
VMTEST doctor-json {\"status\": \"findings\", \"findings\": [1], \"kernel\": {\"hooks\": [{\"hook\": \"fentry\", \"support\": \"yes\", \"detail\": \"d\"}, {\"hook\": \"tcx\", \"support\": \"yes\", \"detail\": \"attached\"}, {\"hook\": \"netfilter\", \"support\": \"untested\", \"detail\": \"u\"}]}}\n\
VMTEST begin drops\n\
{ \"type\": \"suite\", \"event\": \"started\", \"test_count\": 4 }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"a\" }\n\
{\"name\":\"a\",\"reason\":\"fate (needs sk_data_ready: no)\",\"type\":\"unchecked\"}\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\", \"exec_time\": 4.06 }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"tcx_one\" }\n\
{\"name\":\"tcx_one\",\"reason\":\"needs tcx: refused\",\"type\":\"skip\"}\n\
{ \"type\": \"test\", \"name\": \"tcx_one\", \"event\": \"ok\", \"exec_time\": 0.5 }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"b\" }\n\
{ \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"exec_time\": 1.5, \"stdout\": \"panicked at x\" }\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"h\" }\n\
{ \"type\": \"test\", \"name\": \"h\", \"event\": \"ignored\", \"message\": \"helper\" }\n\
{ \"type\": \"suite\", \"event\": \"failed\", \"passed\": 2, \"failed\": 1, \"ignored\": 1 }\n\
VMTEST end drops status=101 seconds=12\n\
VMTEST begin netfilter\n\
{ \"type\": \"test\", \"event\": \"started\", \"name\": \"n\" }\n";

fn report(results: Results) -> Report {
    Report {
        series: "6.1".into(),
        package: "p".into(),
        version: "v".into(),
        config: vec![],
        filter: None,
        build_s: 1.0,
        wall_s: 100.0,
        qemu_cpu_s: 150.0,
        timed_out: false,
        qemu_status: "exit status: 0".into(),
        alerts: vec![],
        results,
    }
}

#[test]
fn parses_markers_probes_tests_and_skips() {
    let r = parse(PORT);
    assert_eq!(r.release.as_deref(), Some("6.1.0-50-cloud-amd64"));
    assert_eq!(r.boot_s, Some(3.52));
    // (600 + 200) busy of 1000 ticks: idle and iowait are not busy.
    assert_eq!(r.cpu_busy, Some(0.8));
    assert_eq!(r.modprobe_failed, ["nft_counter"]);
    assert_eq!(r.probes.len(), 2);
    assert!(r.probes[0].ok && !r.probes[1].ok);
    assert_eq!(r.tracer_summary.as_ref().unwrap()["probe"], "tp_btf");
    let outcomes: Vec<(&str, &Outcome)> = r
        .tests
        .iter()
        .map(|t| (t.name.as_str(), &t.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("a", &Outcome::Passed),
            ("tcx_one", &Outcome::Skipped("needs tcx: refused".into())),
            ("b", &Outcome::Failed),
            ("h", &Outcome::Ignored)
        ]
    );
    assert_eq!(r.tests[2].output, "panicked at x");
    assert_eq!(r.tests[0].unchecked, ["fate (needs sk_data_ready: no)"]);
    assert!(r.tests[1].unchecked.is_empty());
    assert_eq!(r.binaries[0].status, Some(101));
    assert_eq!(r.binaries[0].seconds, Some(12));
    assert!(!r.done);
    assert_eq!(r.unfinished, ["netfilter/n"]);
}

#[test]
fn problems_name_every_reason_to_fail() {
    let rep = report(parse(PORT));
    let p = rep.problems();
    assert!(
        p.iter().any(|l| l.contains("before its final marker")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l == "netfilter/n was running when the guest stopped"),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l == "drops/b failed"), "{p:?}");
    // fentry agrees, netfilter was not tried, tcx differs.
    assert_eq!(
        rep.disagreements(),
        [
            "tcx: kernel-probe says no (tcx attach refused: x), tracer doctor says yes (attached)"
        ]
    );
    let text = rep.render();
    assert!(
        text.contains("result: FAIL - 1 passed (1 partly: a kernel feature missing), 0 FLAKY, 1 failed, 1 skipped, 1 ignored"),
        "{text}"
    );
    assert!(text.contains("tracer drop probe: tp_btf"));
    assert!(
        text.contains("tracer doctor: findings (1 findings on this bare guest); hooks: fentry yes, tcx yes, netfilter_link untested"),
        "{text}"
    );
}

#[test]
fn a_clean_run_is_green_and_a_crashed_binary_is_not() {
    let ok = "VMTEST begin t\n{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\nVMTEST end t status=0 seconds=1\nVMTEST done\n";
    assert_eq!(report(parse(ok)).problems(), Vec::<String>::new());
    let crashed = ok.replace("status=0", "status=134");
    assert_eq!(
        report(parse(&crashed)).problems(),
        ["t exited with status 134 without a failed test"]
    );
    let none = "VMTEST done\n";
    assert_eq!(report(parse(none)).problems(), ["no test ran"]);
}

#[test]
fn a_retry_that_passes_makes_the_test_flaky_and_one_that_fails_keeps_it_failed() {
    let port = "VMTEST begin t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"failed\", \"stdout\": \"first\" }\n\
{ \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"stdout\": \"once\" }\n\
{ \"type\": \"test\", \"name\": \"c\", \"event\": \"ok\" }\n\
VMTEST end t status=101 seconds=9\n\
VMTEST retry t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\n\
{ \"type\": \"test\", \"name\": \"b\", \"event\": \"failed\", \"stdout\": \"twice\" }\n\
VMTEST end t status=101 seconds=2\n\
VMTEST done\n";
    let rep = report(parse(port));
    let o: Vec<(&str, &Outcome)> = rep
        .results
        .tests
        .iter()
        .map(|t| (t.name.as_str(), &t.outcome))
        .collect();
    assert_eq!(
        o,
        [
            ("a", &Outcome::Flaky),
            ("b", &Outcome::Failed),
            ("c", &Outcome::Passed)
        ]
    );
    assert!(
        rep.results.tests[1].output.contains("once")
            && rep.results.tests[1].output.contains("twice")
    );
    assert_eq!(rep.problems(), ["t/b failed"]);
    // Only a flaky one: green, the first run's status explained by it.
    let flaky_only = "VMTEST begin t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"failed\", \"stdout\": \"first\" }\n\
VMTEST end t status=101 seconds=9\n\
VMTEST retry t\n\
{ \"type\": \"test\", \"name\": \"a\", \"event\": \"ok\" }\n\
VMTEST end t status=0 seconds=2\n\
VMTEST done\n";
    assert_eq!(report(parse(flaky_only)).problems(), Vec::<String>::new());
}

#[test]
fn live_events() {
    assert_eq!(event("VMTEST begin drops\r"), Event::Begin("drops".into()));
    assert_eq!(
        event("VMTEST end drops status=0 seconds=3"),
        Event::End {
            name: "drops".into(),
            status: Some(0)
        }
    );
    assert_eq!(
        event(
            "{ \"type\": \"test\", \"name\": \"a\", \"event\": \"failed\", \"exec_time\": 1.5 }"
        ),
        Event::Test {
            name: "a".into(),
            outcome: Outcome::Failed,
            secs: Some(1.5)
        }
    );
    assert_eq!(
        event("{ \"type\": \"test\", \"event\": \"started\", \"name\": \"a\" }"),
        Event::Other
    );
    assert_eq!(event("garbage"), Event::Other);
}
