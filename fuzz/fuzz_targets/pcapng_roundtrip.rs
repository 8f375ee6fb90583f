//! Our pcapng writer (`output::pcapng`) and a reader (pcap-file) agree: whatever packets,
//! interfaces, timestamps and comments go in come back out, in order.
#![no_main]

use std::{borrow::Cow, time::Duration};

use libfuzzer_sys::fuzz_target;
use pcap_file::pcapng::{Block, PcapNgReader, blocks::enhanced_packet::EnhancedPacketOption};
use tracer::sinks::pcapng::{Iface, Pcapng};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("tracer-fuzz-pcapng-{}", std::process::id()));
    let mut want = Vec::new();
    {
        let Ok(mut w) = Pcapng::create(&path, 256, Some("fuzz")) else { return };
        // Records: [iface 0..3][linktype bit][ts 4][len 1][data len][comment len 1][comment].
        let mut rest = data;
        while let [iface, lt, t0, t1, t2, t3, n, tail @ ..] = rest {
            let n = usize::from(*n).min(tail.len());
            let (bytes, tail) = tail.split_at(n);
            let Some((&c, tail)) = tail.split_first() else { break };
            let c = usize::from(c).min(tail.len());
            let (comment, tail) = tail.split_at(c);
            rest = tail;
            let ifc = Iface { netns: u32::from(*iface), ifindex: u32::from(iface % 4), ifname: format!("lxc{}", iface % 4), linktype: 1 + (lt & 1), pod: (iface & 1 == 1).then(|| "default/p".into()) };
            let ts = Duration::from_nanos(u64::from(u32::from_le_bytes([*t0, *t1, *t2, *t3])) * 1_000_003);
            let comment = String::from_utf8_lossy(comment).into_owned();
            w.write(&ifc, ts, u32::try_from(bytes.len()).unwrap(), bytes, comment.clone(), true).unwrap();
            want.push((bytes.to_vec(), ts, comment));
        }
        w.flush().unwrap();
        assert_eq!(w.sink().committed_events(), want.len() as u64);
    }
    let f = std::fs::File::open(&path).unwrap();
    let mut r = PcapNgReader::new(f).expect("our pcapng has a section header");
    let mut got = Vec::new();
    while let Some(block) = r.next_block() {
        if let Block::EnhancedPacket(e) = block.expect("every block we wrote reads back") {
            let comment = e.options.iter().find_map(|o| match o {
                EnhancedPacketOption::Comment(c) => Some(c.clone()),
                _ => None,
            });
            got.push((e.data.into_owned(), e.timestamp, comment.unwrap_or(Cow::Borrowed("")).into_owned()));
        }
    }
    let _ = std::fs::remove_file(&path);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.0, w.0, "packet bytes");
        assert_eq!(g.1, w.1, "timestamp");
        // pcapng options are padded with NULs; a comment with its own trailing NULs reads back
        // shorter, nothing else may differ.
        assert_eq!(g.2.trim_end_matches('\0'), w.2.trim_end_matches('\0'), "comment");
    }
});
