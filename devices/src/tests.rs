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

fn pc() -> Platform {
    Platform::new(Config::new(50_000_000, 256 << 20, 1_796_072_709))
}

#[test]
fn power_reset_and_exit_events() {
    let mut p = pc();
    p.io_out(pm::PM1A_CNT, 2, (pm::SLP_TYP_S5 as u32) << 10 | 1 << 13);
    assert_eq!(p.poll_event(), Some(Event::PowerOff));
    p.io_out(0xCF9, 1, 0x02);
    p.io_out(0xCF9, 1, 0x06);
    assert_eq!(p.poll_event(), Some(Event::Reset));
    p.io_out(0x64, 1, 0xFE);
    assert_eq!(p.poll_event(), Some(Event::Reset));
    p.io_out(QEMU_EXIT_PORT, 4, 0x31);
    assert_eq!(p.poll_event(), Some(Event::Exit(0x31)));
    for &b in b"Shutdown" {
        p.io_out(BOCHS_SHUTDOWN_PORT, 1, b as u32);
    }
    assert_eq!(p.poll_event(), Some(Event::Exit(0)));
    assert_eq!(p.poll_event(), None);
}

#[test]
fn no_acpi_means_no_pm_block() {
    let mut cfg = Config::new(50_000_000, 256 << 20, 0);
    cfg.acpi = false;
    let mut p = Platform::new(cfg);
    assert_eq!(p.io_in(pm::PM_TMR, 4), 0xFFFF_FFFF);
    p.io_out(pm::PM1A_CNT, 2, 5 << 10 | 1 << 13);
    assert_eq!(p.poll_event(), None);
}
