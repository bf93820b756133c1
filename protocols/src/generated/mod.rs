// Automatically generated mod.rs
pub mod hypha;
