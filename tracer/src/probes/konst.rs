//! Writes the load-time constants (`tracer_common::konst`) into the object's code: every
//! `r = imm64` whose upper half names `Config` or `Offsets` gets the value of the field its
//! lower half gives (byte offset, size), so the programs read no map for them.
use anyhow::Result;
use tracer_common::{Config, Offsets, konst};

/// `BPF_LD | BPF_IMM | BPF_DW`: two instruction slots, the immediate's halves in each `imm`.
const LD_IMM64: u8 = 0x18;
const SLOT: usize = 8;

/// Writes every placeholder in `elf`'s code sections; the number written.
pub fn patch(elf: &mut [u8], config: &Config, offsets: &Offsets) -> Result<usize> {
    let mut written = 0;
    super::each_code_section(elf, |code| {
        let mut i = 0;
        while i + 2 * SLOT <= code.len() {
            let pair = &mut code[i..i + 2 * SLOT];
            // A plain 64-bit immediate (source register 0, not a map or function reference).
            if pair[0] != LD_IMM64 || pair[1] >> 4 != 0 {
                i += SLOT;
                continue;
            }
            let tag = u32::from_le_bytes([pair[12], pair[13], pair[14], pair[15]]);
            let id = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
            let value = match tag {
                konst::CONFIG => config_value(config, id),
                konst::OFFSETS => offsets_value(offsets, id),
                _ => {
                    i += 2 * SLOT;
                    continue;
                }
            };
            let value = value.ok_or_else(|| anyhow::anyhow!("the eBPF object reads an unknown load-time constant ({tag:#x}, {id:#x}): rebuild it with this tracer"))?;
            pair[4..8].copy_from_slice(&value.to_le_bytes()[..4]);
            pair[12..16].copy_from_slice(&value.to_le_bytes()[4..]);
            written += 1;
            i += 2 * SLOT;
        }
        Ok(())
    })?;
    Ok(written)
}

/// `fn $name(v: &$ty, id) -> Option<u64>`: the value of the field placeholder `id` (the
/// lower half of its immediate) names, None for no field (`tracer_common::config_fields!`).
macro_rules! values {
    ($name:ident, $ty:ident, $tag:ident, { $($field:ident: $t:ident),* $(,)? }) => {
        fn $name(v: &$ty, id: u32) -> Option<u64> {
            $(
                if u64::from(id) == konst::id(konst::$tag, std::mem::offset_of!($ty, $field), size_of::<$t>()) & 0xffff_ffff {
                    return Some(u64::from(v.$field));
                }
            )*
            None
        }
    };
}

tracer_common::config_fields!(values, config_value);
tracer_common::offsets_fields!(values, offsets_value);

#[cfg(test)]
mod tests {
    use super::*;

    /// The placeholders left in `elf` (upper halves that name a struct).
    fn left(elf: &[u8]) -> usize {
        elf.chunks_exact(SLOT)
            .zip(elf.chunks_exact(SLOT).skip(1))
            .filter(|(a, b)| a[0] == LD_IMM64 && [konst::CONFIG, konst::OFFSETS].contains(&u32::from_le_bytes([b[4], b[5], b[6], b[7]])))
            .count()
    }

    #[test]
    fn every_placeholder_gets_its_fields_value() {
        let obj = crate::probes::loader::object();
        let before = left(obj);
        assert!(before >= 10, "the probes read their config and offsets as placeholders: {before}");
        let config = Config { reason_consumed: 0x1234_5678, event_interval_ns: 0x0102_0304_0506_0708, ..Config::default() };
        let offsets = Offsets { skb_dev: 0x10, ..Offsets::default() };
        let mut copy = obj.to_vec();
        assert_eq!(patch(&mut copy, &config, &offsets).unwrap(), before);
        assert_eq!(left(&copy), 0);
        // The values are where the placeholders were: find one of each.
        let has = |v: u64| copy.chunks_exact(SLOT).zip(copy.chunks_exact(SLOT).skip(1)).any(|(a, b)| {
            a[0] == LD_IMM64 && u64::from(u32::from_le_bytes([a[4], a[5], a[6], a[7]])) | u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]])) << 32 == v
        });
        assert!(has(0x1234_5678) && has(0x0102_0304_0506_0708) && has(0x10));
    }

    #[test]
    fn a_field_is_read_whole_and_an_unknown_one_refused() {
        let c = Config { copy_len: 77, forward_input_v6: u64::MAX - 1, ..Config::default() };
        let id = |off: usize, size: usize| u32::try_from(konst::id(konst::CONFIG, off, size) & 0xffff_ffff).unwrap();
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, copy_len), 4)), Some(77));
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, forward_input_v6), 8)), Some(u64::MAX - 1));
        // Past the struct, half a field, a field's offset with another size.
        assert_eq!(config_value(&c, id(size_of::<Config>(), 4)), None);
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, forward_input_v6) + 4, 4)), None);
        assert_eq!(config_value(&c, id(std::mem::offset_of!(Config, copy_len), 8)), None);
        let o = Offsets { dst_input: 9, ..Offsets::default() };
        assert_eq!(offsets_value(&o, u32::try_from(konst::id(konst::OFFSETS, std::mem::offset_of!(Offsets, dst_input), 4) & 0xffff_ffff).unwrap()), Some(9));
    }
}
