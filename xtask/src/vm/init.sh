#!/bin/busybox sh
# /init of a vm-test guest (xtask/src/vm/). Console (ttyS0): boot messages and stderr, for
# people. ttyS1: machine-readable lines for the host: `VMTEST …` markers and JSON (libtest's
# events, kernel-probe answers, test skips). Ends by powering off; the host bounds the time.
# Applets as commands for the rest of the guest; this script, run by busybox's sh, uses the
# real tools by path where both exist (its shell would pick the applet).
/bin/busybox --install -s /bin 2> /dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
# busybox's mount: util-linux's (on PATH, for the tests) wants /proc before it can mount it.
for m in "proc proc /proc" "sysfs sysfs /sys" "devtmpfs devtmpfs /dev" "tmpfs tmpfs /run" "tmpfs tmpfs /tmp" \
    "bpf bpf /sys/fs/bpf" "tracefs tracefs /sys/kernel/tracing" "debugfs debugfs /sys/kernel/debug"; do
    set -- $m
    /bin/busybox mount -t "$1" "$2" "$3"
done
. /etc/vmtest/env

R=/dev/ttyS1
stty -F "$R" raw -echo
say() { echo "VMTEST $*" > "$R"; }
say "kernel $(uname -r)"
say "boot-seconds $(cut -d' ' -f1 /proc/uptime)"

for m in $VMTEST_MODULES; do
    /sbin/modprobe "$m" || say "modprobe-failed $m"
done
/usr/sbin/ip link set lo up

# What this kernel lets BPF programs do (one JSON line per feature).
kernel-probe > "$R"
# Which drop probe the tracer picks here, from a one-second capture's summary.
if tracer capture --quiet --duration 1s --summary /tmp/probe.json 'udp port 9' > /dev/null 2> /tmp/probe.err; then
    say "tracer-summary $(tr -d '\n' < /tmp/probe.json)"
else
    say "tracer-failed $(head -n 1 /tmp/probe.err)"
fi
# The tracer's own view of this kernel (its hook probes among the checks); exit 1 means
# findings, which a bare guest has, so only an empty answer is a failure.
tracer doctor --json > /tmp/doctor.json 2> /tmp/doctor.err
if [ -s /tmp/doctor.json ]; then
    say "doctor-json $(tr -d '\n' < /tmp/doctor.json)"
else
    say "doctor-failed $(head -n 1 /tmp/doctor.err)"
fi

export TRACER_BIN=/usr/bin/tracer TESTBED_SKIP_LOG="$R" RUSTC_BOOTSTRAP=1
set -o pipefail
# Runs test binary $1 with the remaining arguments; its JSON events go to the port and to
# /tmp/events.json. Sets rc.
run_tests() {
    t=$1
    shift
    start=$(date +%s)
    # JSON events need -Z unstable-options, which test binaries accept with RUSTC_BOOTSTRAP=1.
    "/vmtest/$t" -Z unstable-options --format json --report-time --test-threads=1 "$@" | tee /tmp/events.json > "$R"
    rc=$?
    seconds=$(( $(date +%s) - start ))
}
round=1
while [ "$round" -le "$VMTEST_REPEAT" ]; do
    for t in $VMTEST_BINARIES; do
        say "begin $t"
        # The tests proven on the host only (xtask/src/vm/host_only.rs), as --skip arguments.
        # shellcheck disable=SC2046 # one argument per line, none with spaces
        run_tests "$t" ${VMTEST_FILTER:+"$VMTEST_FILTER"} $(cat "/etc/vmtest/skip/$t")
        say "end $t status=$rc seconds=$seconds"
        # Failed tests run again, alone (TCG under a loaded host stretches timings); the host
        # reports a test that passes only then as flaky.
        tries=0
        while [ "$rc" -ne 0 ] && [ "$tries" -lt "$VMTEST_RETRIES" ]; do
            failed=$(sed -n 's/.*"name": "\([^"]*\)", "event": "failed".*/\1/p' /tmp/events.json)
            [ -n "$failed" ] || break
            tries=$((tries + 1))
            say "retry $t"
            # shellcheck disable=SC2086 # one argument per test name
            run_tests "$t" --exact $failed
            say "end $t status=$rc seconds=$seconds"
        done
    done
    round=$((round + 1))
done
# How busy the guest's CPUs were over its life (user nice system idle iowait ... in ticks):
# mostly busy means the run is bound by the host's CPU, mostly idle by waits.
say "cpu $(head -n 1 /proc/stat)"
say done
sync
poweroff -f
