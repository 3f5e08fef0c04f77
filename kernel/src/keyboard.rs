//! PS/2 keyboard (placeholder: being written).
pub fn try_read() -> Option<u8> {
    None
}
