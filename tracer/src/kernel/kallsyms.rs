//! `/proc/kallsyms` → `symbol+0xoff` for drop locations. Text symbols only, names packed in one
//! string (≈ 5 MB for a distribution kernel's 120,000 symbols instead of one allocation each),
//! read line by line (the file itself is ≈ 5 MB).
use std::io::BufRead;

use anyhow::{Context as _, Result};

pub struct Kallsyms {
    /// (address, end of the name in `names`), sorted by address; a name starts where the
    /// previous entry (in `names` order) ends.
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let f = std::fs::File::open("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        let mut k = Self::empty();
        for line in std::io::BufReader::with_capacity(64 * 1024, f).lines() {
            k.add_line(&line.context("cannot read /proc/kallsyms")?);
        }
        k.finish();
        Ok(k)
    }

    pub fn parse(text: &str) -> Self {
        let mut k = Self::empty();
        for line in text.lines() {
            k.add_line(line);
        }
        k.finish();
        k
    }

    fn empty() -> Self {
        Self { syms: Vec::new(), names: String::new() }
    }

    fn add_line(&mut self, line: &str) {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { return };
        let Ok(addr) = u64::from_str_radix(addr, 16) else { return };
        if addr == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
            return;
        }
        let (Ok(start), Ok(end)) = (u32::try_from(self.names.len()), u32::try_from(self.names.len() + name.len())) else { return };
        self.names.push_str(name);
        self.syms.push((addr, start, end));
    }

    fn finish(&mut self) {
        self.syms.sort_unstable();
        self.syms.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    /// The address of text symbol `name` (the first of that name); None when unknown or
    /// hidden (`kptr_restrict` shows zeros, which are not kept).
    pub fn address(&self, name: &str) -> Option<u64> {
        self.syms.iter().find(|(_, start, end)| self.names.get(*start as usize..*end as usize) == Some(name)).map(|(addr, _, _)| *addr)
    }

    /// `name+0xoff`, or the bare address when addresses are hidden (`kptr_restrict`) or unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        let i = self.syms.partition_point(|(a, _, _)| *a <= addr);
        if i == 0 {
            return format!("{addr:#x}");
        }
        let (base, start, end) = self.syms[i - 1];
        let name = self.names.get(start as usize..end as usize).unwrap_or("?");
        format!("{name}+{:#x}", addr - base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes() {
        let k = Kallsyms::parse("ffffffff81000000 T _text\nffffffff81001000 t nft_do_chain\tnf_tables\nffffffff81002000 D data\n");
        assert_eq!(k.symbolize(0xffff_ffff_8100_1234), "nft_do_chain+0x234");
        assert_eq!(k.symbolize(0xffff_ffff_8100_0001), "_text+0x1");
        assert_eq!(k.symbolize(0x10), "0x10");
        assert_eq!(k.address("nft_do_chain"), Some(0xffff_ffff_8100_1000));
        assert_eq!(k.address("data"), None, "not text");
        assert_eq!(k.address("nft_do"), None);
    }

    #[test]
    fn reads_this_machine() {
        let Ok(k) = Kallsyms::load() else { return };
        // Addresses are hidden from non-root (all zero): then nothing is kept.
        if let Some(&(addr, _, _)) = k.syms.first() {
            assert!(!k.symbolize(addr).starts_with("0x"));
        }
    }
}
