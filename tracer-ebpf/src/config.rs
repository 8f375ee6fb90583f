//! Load-time constants (`tracer_common::konst`): every `Config` and `Offsets` field a program
//! reads is an immediate, `r = imm64`, that the loader writes before the object is loaded with
//! the value it computed from the running kernel's BTF and the user's options. A read of a
//! field is then a register move: no load from a read-only map on every probe run (a drop
//! flood paid a cache miss a run for those), and the verifier still knows every value, so the
//! paths a setting turns off are pruned as before. `Cfg` and `Offs` are the structs' fields as
//! methods (a struct built from the immediates would be built on the stack).
use core::mem::offset_of;

use tracer_common::{Config, Offsets, konst};

/// The immediate the loader writes for placeholder `ID`.
#[inline(always)]
pub fn imm<const ID: u64>() -> u64 {
    let v: u64;
    // SAFETY: one `r = imm64` instruction; it reads and writes no memory.
    unsafe { core::arch::asm!("{v} = {id} ll", v = lateout(reg) v, id = const ID, options(pure, nomem, nostack)) };
    v
}

/// A method per field, each returning the field's immediate (`tracer_common::config_fields!`).
macro_rules! fields {
    ($view:ident, $ty:ident, $tag:ident, { $($field:ident: $t:ident),* $(,)? }) => {
        impl $view {
            $(
                #[inline(always)]
                pub fn $field(&self) -> $t {
                    imm::<{ konst::id(konst::$tag, offset_of!($ty, $field), size_of::<$t>()) }>() as $t
                }
            )*
        }
        // Every field listed: a field added to the struct and not to the list does not compile.
        const _: fn() -> $ty = || $ty { $($field: 0),* };
    };
}

/// `Offsets`' fields.
pub struct Offs;
/// `Config`'s fields.
pub struct Cfg;

tracer_common::offsets_fields!(fields, Offs);
tracer_common::config_fields!(fields, Cfg);

#[inline(always)]
pub fn offsets() -> &'static Offs {
    &Offs
}

#[inline(always)]
pub fn config() -> &'static Cfg {
    &Cfg
}
