//! Reading outputs back, whatever way the run ended.

use std::path::Path;

use integration_tests::TempDir;
use serde_json::Value;

/// Every line of a JSON Lines file; a last line without its newline (cut by a kill) is allowed
/// and left out, any other bad line fails. Returns (drop events, all records, cut tail).
pub fn read_jsonl(path: &Path) -> (u64, u64, bool) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut drops = 0;
    let mut records = 0;
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let v: Value = serde_json::from_slice(line).unwrap_or_else(|e| panic!("{} line {} is not JSON ({e}): {}", path.display(), i + 1, String::from_utf8_lossy(line)));
        records += 1;
        drops += u64::from(v["type"] == "drop" || v["kind"] == "drop");
    }
    (drops, records, complete < bytes.len())
}

/// Walks pcapng blocks (type, length, trailing length): every block whole, except possibly a
/// truncated last one. Returns (enhanced packet blocks, drop packets by comment, bytes of whole
/// blocks, cut tail).
pub fn walk_pcapng(path: &Path) -> (u64, u64, usize, bool) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert!(b.len() >= 28 && u32_at(0) == 0x0A0D_0D0A, "{} does not start with a section header block", path.display());
    let (mut off, mut epbs, mut drops) = (0usize, 0u64, 0u64);
    while off + 12 <= b.len() {
        let (kind, len) = (u32_at(off), u32_at(off + 4) as usize);
        assert!(len >= 12 && len % 4 == 0, "bad block length {len} at {off} in {}", path.display());
        if off + len > b.len() {
            break;
        }
        assert_eq!(u32_at(off + len - 4) as usize, len, "trailing length of the block at {off}");
        if kind == 6 {
            epbs += 1;
            // The comment of a drop says "drop reason="; --all's path packets say their fate.
            let block = &b[off..off + len];
            let has = |needle: &[u8]| block.windows(needle.len()).any(|w| w == needle);
            drops += u64::from(has(b"drop reason=") || has(b"fate: dropped"));
        }
        off += len;
    }
    (epbs, drops, off, off < b.len())
}

/// The whole blocks of a pcapng read back by pcap-file and by tshark: both see `packets`.
pub fn pcapng_readable(path: &Path, whole: usize, packets: u64) {
    // A copy elsewhere: the file's own disk may be full.
    let scratch = TempDir::new("rb-pcap").unwrap();
    let copy = scratch.join("whole.pcapng");
    let bytes = std::fs::read(path).unwrap();
    std::fs::write(&copy, &bytes[..whole]).unwrap();
    let read = integration_tests::pcap::read(&copy).unwrap();
    assert_eq!(read.packets.len() as u64, packets, "pcap-file packets");
    let rows = integration_tests::pcap::tshark_fields(&copy, &["frame.number"]).unwrap();
    assert_eq!(rows.len() as u64, packets, "tshark packets");
}
