//! Screen output (placeholder: being written).
pub fn init(_fb: Option<crate::bootinfo::Framebuffer>) {}
