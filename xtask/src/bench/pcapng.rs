//! Reads a pcapng back to count what it holds: enhanced packet blocks, and how many carry a
//! comment (the tracer puts reason, location and interface there). A block walk is all the
//! bench needs; a truncated or malformed file is an error, not a short count.
use std::{
    io::{BufReader, Read},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

const SHB: u32 = 0x0A0D_0D0A;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub with_comment: u64,
    pub interfaces: u64,
}

pub fn count(path: &Path) -> Result<Counts> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    count_from(BufReader::with_capacity(1 << 20, f)).with_context(|| format!("reading {}", path.display()))
}

pub fn count_from(mut r: impl Read) -> Result<Counts> {
    let mut c = Counts::default();
    let mut big_endian = false;
    let mut first = true;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 8];
        match read_full(&mut r, &mut head)? {
            0 => break,
            8 => {}
            n => bail!("truncated block header ({n} bytes)"),
        }
        let raw_type = u32::from_le_bytes(head[..4].try_into()?);
        if raw_type == SHB {
            // The byte-order magic follows the length; it decides how to read everything.
            let mut magic = [0u8; 4];
            if read_full(&mut r, &mut magic)? != 4 {
                bail!("truncated section header");
            }
            big_endian = u32::from_be_bytes(magic) == BYTE_ORDER_MAGIC;
            if !big_endian && u32::from_le_bytes(magic) != BYTE_ORDER_MAGIC {
                bail!("bad byte-order magic in the section header");
            }
            let len = word(&head[4..8], big_endian)?;
            body.resize(usize::try_from(len)?.checked_sub(12).context("section header too short")?, 0);
            if read_full(&mut r, &mut body)? != body.len() {
                bail!("truncated section header");
            }
            first = false;
            continue;
        }
        if first {
            bail!("not a pcapng file (no section header first)");
        }
        let ty = word(&head[..4], big_endian)?;
        let len = usize::try_from(word(&head[4..8], big_endian)?)?;
        if len < 12 || len % 4 != 0 {
            bail!("bad block length {len}");
        }
        body.resize(len - 8, 0);
        if read_full(&mut r, &mut body)? != body.len() {
            bail!("truncated block (type {ty}, {len} bytes)");
        }
        let trailer = word(&body[body.len() - 4..], big_endian)?;
        if usize::try_from(trailer)? != len {
            bail!("block lengths disagree ({len} vs {trailer})");
        }
        match ty {
            1 => c.interfaces += 1,
            EPB => {
                c.packets += 1;
                if epb_has_comment(&body[..body.len() - 4], big_endian)? {
                    c.with_comment += 1;
                }
            }
            _ => {}
        }
    }
    if first {
        bail!("empty file");
    }
    Ok(c)
}

fn epb_has_comment(b: &[u8], be: bool) -> Result<bool> {
    if b.len() < 20 {
        bail!("enhanced packet block too short");
    }
    let cap = usize::try_from(word(&b[12..16], be)?)?;
    let mut i = 20 + cap.div_ceil(4) * 4;
    while i + 4 <= b.len() {
        let code = half(&b[i..i + 2], be);
        let len = usize::from(half(&b[i + 2..i + 4], be));
        if code == OPT_END {
            break;
        }
        if code == OPT_COMMENT {
            return Ok(true);
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    Ok(false)
}

fn word(b: &[u8], be: bool) -> Result<u32> {
    let a: [u8; 4] = b.try_into()?;
    Ok(if be { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
}

fn half(b: &[u8], be: bool) -> u16 {
    let a = [b[0], b[1]];
    if be { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ty: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(12 + body.len()).unwrap();
        let mut v = ty.to_le_bytes().to_vec();
        v.extend(len.to_le_bytes());
        v.extend(body);
        v.extend(len.to_le_bytes());
        v
    }

    fn epb(data: &[u8], comment: Option<&str>) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [0u32, 0, 0, u32::try_from(data.len()).unwrap(), u32::try_from(data.len()).unwrap()] {
            b.extend(w.to_le_bytes());
        }
        b.extend(data);
        b.resize(b.len().div_ceil(4) * 4, 0);
        if let Some(c) = comment {
            b.extend(OPT_COMMENT.to_le_bytes());
            b.extend(u16::try_from(c.len()).unwrap().to_le_bytes());
            b.extend(c.as_bytes());
            b.resize(b.len().div_ceil(4) * 4, 0);
            b.extend([0u8; 4]);
        }
        block(EPB, &b)
    }

    fn file(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut shb = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        shb.extend(1u16.to_le_bytes());
        shb.extend(0u16.to_le_bytes());
        shb.extend((-1i64).to_le_bytes());
        let mut v = block(SHB, &shb);
        for b in blocks {
            v.extend(b);
        }
        v
    }

    #[test]
    fn counts_packets_comments_and_interfaces() {
        let idb = block(1, &[1, 0, 0, 0, 0, 0, 4, 0]);
        let f = file(&[idb, epb(&[1, 2, 3], Some("NETFILTER_DROP at x")), epb(&[9; 64], None), epb(&[7; 5], Some("y"))]);
        let c = count_from(&f[..]).unwrap();
        assert_eq!(c, Counts { packets: 3, with_comment: 2, interfaces: 1 });
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let f = file(&[epb(&[1, 2, 3], None)]);
        assert!(count_from(&f[..f.len() - 2]).is_err());
        assert!(count_from(&b"not a pcapng at all"[..]).is_err());
        assert!(count_from(&b""[..]).is_err());
    }
}
