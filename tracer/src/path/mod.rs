//! --path: following matching packets hook by hook (the records are in `model::path`).
pub mod story;
pub mod tracker;
