//! `--iface NAME|GLOB`: names with `?` anywhere and `*` only at the end, matched in the kernel
//! against the device name at the drop point (so interfaces created during the capture count).
use anyhow::{Result, bail};
use tracer_common::{IFNAMSIZ, IfacePattern, MAX_IFACE_PATTERNS};

pub fn parse(pattern: &str) -> Result<IfacePattern> {
    let (body, prefix) = match pattern.strip_suffix('*') {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    if body.contains('*') || body.contains('[') {
        bail!("unsupported interface pattern {pattern:?}: use a name, `?` for one character and `*` only at the end (e.g. lxc*)");
    }
    if body.len() >= IFNAMSIZ {
        bail!("interface name {pattern:?} is longer than {} characters", IFNAMSIZ - 1);
    }
    if body.is_empty() && !prefix {
        bail!("empty interface name");
    }
    #[expect(clippy::cast_possible_truncation, reason = "body is shorter than IFNAMSIZ (checked above)")]
    let mut p = IfacePattern { len: body.len() as u32, prefix: u32::from(prefix), ..Default::default() };
    for (i, b) in body.bytes().enumerate() {
        if b != b'?' {
            p.name[i] = b;
            p.mask[i] = 0xff;
        }
    }
    Ok(p)
}

pub fn parse_all(patterns: &[String]) -> Result<Vec<IfacePattern>> {
    if patterns.len() > MAX_IFACE_PATTERNS as usize {
        bail!("at most {MAX_IFACE_PATTERNS} --iface patterns are supported");
    }
    patterns.iter().map(|p| parse(p)).collect()
}

pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// Userspace mirror of the kernel matcher (also picks the hooks tc observers go on).
pub fn matches(p: &IfacePattern, name: &str) -> bool {
    let name = name.as_bytes();
    let len = p.len as usize;
    if name.len() < len || (p.prefix == 0 && name.len() != len) {
        return false;
    }
    (0..len).all(|i| (name[i] ^ p.name[i]) & p.mask[i] == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = parse("lxc*").unwrap();
        assert!(matches(&p, "lxc5c0a11") && matches(&p, "lxc") && !matches(&p, "eth0"));
        let e = parse("eth0").unwrap();
        assert!(matches(&e, "eth0") && !matches(&e, "eth01"));
        let q = parse("eth?").unwrap();
        assert!(matches(&q, "eth1") && !matches(&q, "eth10"));
        assert!(parse("l*x").is_err());
        assert!(parse("averyveryverylongname").is_err());
    }
}
