//! `/proc/kallsyms` → `symbol+0xoff` for drop locations.
use anyhow::{Context as _, Result};

pub struct Kallsyms {
    /// Every symbol name, back to back (one allocation instead of ~200k small ones).
    names: String,
    /// Text symbols sorted by address: (address, start and end of the name in `names`).
    syms: Vec<(u64, u32, u32)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut names = String::new();
        let mut syms = Vec::new();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
            let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
            if addr == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let (Ok(start), Ok(end)) = (u32::try_from(names.len()), u32::try_from(names.len() + name.len())) else { break };
            names.push_str(name);
            syms.push((addr, start, end));
        }
        syms.sort_unstable_by_key(|s| s.0);
        names.shrink_to_fit();
        syms.shrink_to_fit();
        Self { names, syms }
    }

    /// `name+0xoff`, or the bare address when addresses are hidden (kptr_restrict) or unknown.
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
        assert_eq!(k.symbolize(0x10), "0x10");
    }
}
