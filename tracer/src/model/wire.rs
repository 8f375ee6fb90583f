//! The kernel's wire record (tracer-common's `PacketEvent` + packet bytes), read in one place.
use anyhow::{Result, bail};
use tracer_common::{EVENT_HEADER_LEN, IFNAMSIZ, PacketEvent, linktype};

/// A wire record split into its fixed header and packet bytes.
pub struct Wire<'a> {
    pub hdr: PacketEvent,
    pub data: &'a [u8],
}

impl<'a> Wire<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < EVENT_HEADER_LEN {
            bail!("short event record ({} bytes)", bytes.len());
        }
        // SAFETY: length checked; PacketEvent is plain old data, read unaligned.
        let hdr = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<PacketEvent>()) };
        let end = EVENT_HEADER_LEN + hdr.cap_len as usize;
        if end > bytes.len() {
            bail!("event record claims {} packet bytes, has {}", hdr.cap_len, bytes.len() - EVENT_HEADER_LEN);
        }
        Ok(Self { hdr, data: &bytes[EVENT_HEADER_LEN..end] })
    }
}

pub fn ifname(raw: &[u8; IFNAMSIZ]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}


/// Where the captured bytes start, as the JSON contract names it.
pub fn link_name(lt: u8) -> &'static str {
    if lt == linktype::ETHERNET { "ethernet" } else { "ip" }
}
