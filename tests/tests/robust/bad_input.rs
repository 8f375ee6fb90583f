//! Bad input: what a refused run must look like, and a kernel without drop reasons to refuse.

use std::path::PathBuf;

use integration_tests::TempDir;

/// One refused run: exactly one stderr line `tracer: error: …` naming `needles`, a non-zero
/// exit, nothing on stdout, no file in its directory.
pub fn refused(what: &str, done: &integration_tests::Finished, needles: &[&str]) {
    assert!(!done.status.success(), "{what}: exit status {}", done.status);
    let lines = done.stderr_lines();
    assert_eq!(lines.len(), 1, "{what}: one stderr line: {:?}", done.stderr);
    assert!(lines[0].starts_with("tracer: error: "), "{what}: {:?}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "{what}: {n:?} in {:?}", lines[0]);
    }
    assert!(done.stdout.is_empty(), "{what}: stdout {:?}", done.stdout);
    assert_eq!(done.dir.entries().unwrap(), Vec::<String>::new(), "{what}: no file");
    eprintln!("{what:<28} exit {:<3} {}", done.status.code().unwrap_or(-1), lines[0]);
}

/// The kernel's BTF with `enum skb_drop_reason` renamed away (its name's bytes changed in the
/// string section), and a tracefs whose `kfree_skb` format is a 5.15 kernel's (no reason field).
pub fn kernel_without_drop_reasons(dir: &TempDir) -> (PathBuf, PathBuf) {
    let mut btf = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
    let needle = b"\0skb_drop_reason\0";
    let at = btf.windows(needle.len()).position(|w| w == needle).expect("this kernel's BTF names enum skb_drop_reason");
    btf[at + needle.len() - 2] = b'X';
    let path = dir.join("vmlinux-without-reasons");
    std::fs::write(&path, btf).unwrap();
    let tracefs = dir.join("tracefs");
    let fmt = tracefs.join("events/skb/kfree_skb");
    std::fs::create_dir_all(&fmt).unwrap();
    std::fs::write(
        fmt.join("format"),
        "name: kfree_skb\nID: 1\nformat:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\nprint fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n",
    )
    .unwrap();
    (path, tracefs)
}
