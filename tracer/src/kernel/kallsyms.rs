//! `/proc/kallsyms` → `symbol+0xoff` for drop locations.
use anyhow::{Context as _, Result};

pub struct Kallsyms {
    /// Text symbols sorted by address.
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable();
        Self { syms }
    }

    /// `name+0xoff`, or the bare address when addresses are hidden (kptr_restrict) or unknown.
    pub fn symbolize(&self, addr: u64) -> String {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        if i == 0 {
            return format!("{addr:#x}");
        }
        let (base, name) = &self.syms[i - 1];
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
