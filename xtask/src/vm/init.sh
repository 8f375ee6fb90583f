#!/bin/busybox sh
# /init of a vm-test guest (xtask/src/vm/). Console (ttyS0): boot messages and stderr, for
# people. ttyS1: machine-readable lines for the host: `VMTEST …` markers and JSON (libtest's
# events, kernel-probe answers, test skips). Ends by powering off; the host bounds the time.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
. /etc/vmtest/env

R=/dev/ttyS1
stty -F "$R" raw -echo
say() { echo "VMTEST $*" > "$R"; }
say "kernel $(uname -r)"
say "boot-seconds $(cut -d' ' -f1 /proc/uptime)"

for m in $VMTEST_MODULES; do
    modprobe "$m" || say "modprobe-failed $m"
done
ip link set lo up

# What this kernel lets BPF programs do (one JSON line per feature).
kernel-probe > "$R"
# Which drop probe the tracer picks here, from a one-second capture's summary.
if tracer capture --quiet --duration 1s --summary /tmp/probe.json 'udp port 9' > /dev/null 2> /tmp/probe.err; then
    say "tracer-summary $(tr -d '\n' < /tmp/probe.json)"
else
    say "tracer-failed $(head -n 1 /tmp/probe.err)"
fi
if tracer doctor --help > /dev/null 2>&1; then
    tracer doctor 2>&1 | while IFS= read -r line; do say "doctor $line"; done
fi

export TRACER_BIN=/usr/bin/tracer TESTBED_SKIP_LOG="$R" RUSTC_BOOTSTRAP=1
for t in $VMTEST_BINARIES; do
    say "begin $t"
    start=$(date +%s)
    # JSON events need -Z unstable-options, which test binaries accept with RUSTC_BOOTSTRAP=1.
    "/vmtest/$t" -Z unstable-options --format json --report-time --test-threads=1 ${VMTEST_FILTER:+"$VMTEST_FILTER"} > "$R"
    rc=$?
    say "end $t status=$rc seconds=$(( $(date +%s) - start ))"
done
say done
sync
poweroff -f
