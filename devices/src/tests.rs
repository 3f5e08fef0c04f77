//! Whole-platform tests: the wiring between devices.
use super::*;

#[test]
fn unknown_ports_read_all_ones() {
    let mut p = Platform::new(Config::new(50_000_000, 256 << 20, 0));
    assert_eq!(p.io_in(0x1234, 1), 0xFF);
    assert_eq!(p.io_in(0x1234, 4), 0xFFFF_FFFF);
}

#[test]
fn pit_through_pic_virtual_wire() {
    let mut p = Platform::new(Config::new(50_000_000, 256 << 20, 0));
    for (port, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01), (0x21, 0xFE)] {
        p.io_out(port, 1, v);
    }
    p.io_out(0x43, 1, 0x34);
    p.io_out(0x40, 1, 100);
    p.io_out(0x40, 1, 0);
    assert_eq!(p.pending_interrupt(), None);
    let d = p.next_deadline_tsc().unwrap();
    p.advance(d);
    assert_eq!(p.pending_interrupt(), Some(0x30));
    p.acknowledge(0x30);
    assert_eq!(p.pending_interrupt(), None);
}
