//! --path: following matching packets hook by hook.
pub mod story;
pub mod timeline;
pub mod tracker;
