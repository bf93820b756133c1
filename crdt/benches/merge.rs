//! Placeholder: the merge benchmark is being written.
fn main() {}
