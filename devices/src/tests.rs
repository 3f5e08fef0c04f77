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

fn init_pic(p: &mut Platform, mask_master: u8, mask_slave: u8) {
    for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01), (0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01)] {
        p.io_out(port, 1, v);
    }
    p.io_out(0x21, 1, mask_master as u32);
    p.io_out(0xA1, 1, mask_slave as u32);
}

const APIC: u64 = LAPIC_BASE;

fn enable_lapic(p: &mut Platform) {
    p.mmio_write(APIC + 0xF0, 4, 0x1FF);
}

fn ioapic_route(p: &mut Platform, pin: u8, low: u32) {
    p.mmio_write(IOAPIC_BASE, 4, (0x11 + 2 * pin) as u64);
    p.mmio_write(IOAPIC_BASE + 0x10, 4, 0);
    p.mmio_write(IOAPIC_BASE, 4, (0x10 + 2 * pin) as u64);
    p.mmio_write(IOAPIC_BASE + 0x10, 4, low as u64);
}

fn pit_periodic(p: &mut Platform, count: u16) {
    p.io_out(0x43, 1, 0x34);
    p.io_out(0x40, 1, (count & 0xFF) as u32);
    p.io_out(0x40, 1, (count >> 8) as u32);
}

#[test]
fn pit_through_ioapic_into_the_lapic() {
    // Linux's usual setup: 8259 masked, LINT0 masked, IRQ0 via GSI2.
    let mut p = pc();
    init_pic(&mut p, 0xFF, 0xFF);
    enable_lapic(&mut p);
    p.mmio_write(APIC + 0x350, 4, 0x1_0700); // LINT0 masked
    ioapic_route(&mut p, 2, 0x31);
    pit_periodic(&mut p, 1193); // 1 kHz
    let d = p.next_deadline_tsc().unwrap();
    p.advance(d);
    assert_eq!(p.pending_interrupt(), Some(0x31));
    p.acknowledge(0x31);
    assert_eq!(p.pending_interrupt(), None);
    // Next tick while the first is in service waits in IRR (same class).
    p.advance(p.next_deadline_tsc().unwrap());
    assert_eq!(p.pending_interrupt(), None);
    p.mmio_write(APIC + 0xB0, 4, 0);
    assert_eq!(p.pending_interrupt(), Some(0x31));
}

#[test]
fn virtual_wire_and_nolapic() {
    let mut p = pc();
    init_pic(&mut p, 0xFE, 0xFF);
    pit_periodic(&mut p, 1193);
    // LINT0 as ExtINT (the reset state) passes the 8259 through.
    p.advance(p.next_deadline_tsc().unwrap());
    assert_eq!(p.pending_interrupt(), Some(0x20));
    // Masking LINT0 (APIC enabled) cuts the 8259 off.
    enable_lapic(&mut p);
    p.mmio_write(APIC + 0x350, 4, 0x1_0700);
    assert_eq!(p.pending_interrupt(), None);
    // Hardware-disabling the APIC connects the 8259 straight to INTR.
    assert_eq!(p.wrmsr(0x1B, 0xFEE0_0000 | 1 << 8), Some(Ok(())));
    assert_eq!(p.pending_interrupt(), Some(0x20));
    p.acknowledge(0x20);
    p.io_out(0x20, 1, 0x20);
    assert_eq!(p.mmio_read(APIC + 0x30, 4), None, "no APIC page while disabled");
}

#[test]
fn uart_thre_interrupt_on_irq4_both_paths() {
    let mut p = pc();
    init_pic(&mut p, 0xEF, 0xFF);
    p.io_out(COM1_BASE + 4, 1, 0x0B); // DTR, RTS, OUT2
    p.io_out(COM1_BASE + 1, 1, 0x02); // ETBEI
    assert_eq!(p.pending_interrupt(), Some(0x24));
    p.acknowledge(0x24);
    assert_eq!(p.io_in(COM1_BASE + 2, 1) & 0x0F, 0x02);
    p.io_out(0x20, 1, 0x20);
    assert_eq!(p.pending_interrupt(), None, "IIR read cleared THRE");
    // Through the IOAPIC: edge on GSI 4.
    init_pic(&mut p, 0xFF, 0xFF);
    enable_lapic(&mut p);
    p.mmio_write(APIC + 0x350, 4, 0x1_0700);
    ioapic_route(&mut p, 4, 0x44);
    p.io_out(COM1_BASE, 1, b'x' as u32);
    assert_eq!(p.uart_take_tx(), Some(b'x'));
    assert_eq!(p.pending_interrupt(), Some(0x44));
    // Received bytes: RX data interrupt.
    p.acknowledge(0x44);
    p.mmio_write(APIC + 0xB0, 4, 0);
    p.io_in(COM1_BASE + 2, 1);
    p.io_out(COM1_BASE + 1, 1, 0x01);
    assert_eq!(p.pending_interrupt(), None);
    assert!(p.uart_receive(b'k'));
    assert_eq!(p.pending_interrupt(), Some(0x44));
}

#[test]
fn sci_is_level_through_the_ioapic() {
    let mut p = pc();
    init_pic(&mut p, 0xFF, 0xFF);
    enable_lapic(&mut p);
    ioapic_route(&mut p, 9, 0x49 | 1 << 15); // level, active high
    p.io_out(pm::PM1A_EVT + 2, 2, 1 << 8); // PWRBTN_EN
    p.press_power_button();
    assert_eq!(p.pending_interrupt(), Some(0x49));
    p.acknowledge(0x49);
    p.mmio_write(APIC + 0xB0, 4, 0);
    assert_eq!(p.pending_interrupt(), Some(0x49), "still asserted: again after EOI");
    p.acknowledge(0x49);
    p.io_out(pm::PM1A_EVT, 2, 1 << 8); // clear PWRBTN_STS
    p.mmio_write(APIC + 0xB0, 4, 0);
    assert_eq!(p.pending_interrupt(), None);
}

#[test]
fn clocks_agree_when_calibrated_against_each_other() {
    // An odd TSC frequency so rounding would show.
    let tsc_hz = 2_394_567_891u64;
    let mut p = Platform::new(Config::new(tsc_hz, 256 << 20, 0));
    enable_lapic(&mut p);
    p.mmio_write(APIC + 0x3E0, 4, 0x3); // divide by 16
    p.mmio_write(APIC + 0x320, 4, 0x1_00EF); // masked one-shot
    let t0 = 1_000_000u64;
    p.advance(t0);
    p.mmio_write(APIC + 0x380, 4, 0xFFFF_FFFF);
    // PIT counter 2, mode 0, 10 ms: poll OUT2 as Linux pit_calibrate_tsc does.
    let v = p.io_in(0x61, 1);
    p.io_out(0x61, 1, (v & !0x02) | 0x01);
    p.io_out(0x43, 1, 0xB0);
    p.io_out(0x42, 1, 11932 & 0xFF);
    p.io_out(0x42, 1, 11932 >> 8);
    let pm0 = p.io_in(pm::PM_TMR, 4);
    let apic0 = p.mmio_read(APIC + 0x390, 4).unwrap();
    let mut t = t0;
    while p.io_in(0x61, 1) & 0x20 == 0 {
        t += 997;
        p.advance(t);
    }
    let pm1 = p.io_in(pm::PM_TMR, 4);
    let apic1 = p.mmio_read(APIC + 0x390, 4).unwrap();
    let secs = 11932.0 / time::PIT_HZ as f64;
    let within = |measured: f64, truth: f64| ((measured - truth) / truth).abs() < 1e-3;
    assert!(within((t - t0) as f64 / secs, tsc_hz as f64), "TSC by the PIT");
    assert!(within(pm1.wrapping_sub(pm0) as f64 / secs, time::PM_TIMER_HZ as f64), "PM timer by the PIT");
    assert!(within((apic0 - apic1) as f64 * 16.0 / secs, tsc_hz as f64), "LAPIC timer by the PIT");
}

#[test]
fn bad_input_gets_hardware_answers() {
    let mut p = pc();
    enable_lapic(&mut p);
    // Fixed IPI with vector 2: ESR send-illegal-vector, nothing delivered.
    p.mmio_write(APIC + 0x300, 4, 0x4_0002);
    p.mmio_write(APIC + 0x280, 4, 0);
    assert_eq!(p.mmio_read(APIC + 0x280, 4), Some(lapic::ESR_SEND_ILLEGAL_VECTOR as u64));
    assert_eq!(p.pending_interrupt(), None);
    // MMIO outside any device is not the platform's (the glue gives
    // all-ones / drops, as a PC does).
    assert_eq!(p.mmio_read(0xFED0_0000, 4), None);
    assert!(!p.mmio_write(0xFED0_0000, 4, 1));
    // x2APIC MSRs in xAPIC mode: #GP.
    assert_eq!(p.rdmsr(0x802), Some(Err(Gp)));
    assert_eq!(p.rdmsr(0x10), None, "not a platform MSR");
    // PIT mode 1 on counter 0 never interrupts.
    init_pic(&mut p, 0xFE, 0xFF);
    p.io_out(0x43, 1, 0x32);
    p.io_out(0x40, 1, 100);
    p.io_out(0x40, 1, 0);
    assert_eq!(p.next_deadline_tsc(), None);
}

#[test]
fn lapic_timer_through_the_platform_and_hlt_deadline() {
    let mut p = pc();
    enable_lapic(&mut p);
    p.mmio_write(APIC + 0x3E0, 4, 0xB);
    p.mmio_write(APIC + 0x320, 4, 0x2_00EC); // periodic, vector 0xEC
    p.advance(100);
    p.mmio_write(APIC + 0x380, 4, 50_000);
    assert_eq!(p.next_deadline_tsc(), Some(50_100));
    p.advance(50_100);
    assert_eq!(p.pending_interrupt(), Some(0xEC));
    // x2APIC + TSC deadline.
    assert_eq!(p.wrmsr(0x1B, 0xFEE0_0000 | 3 << 10), Some(Ok(())));
    assert_eq!(p.wrmsr(0x832, 0x4_00ED), Some(Ok(())));
    assert_eq!(p.wrmsr(0x6E0, 80_000), Some(Ok(())));
    assert_eq!(p.next_deadline_tsc(), Some(80_000));
    p.advance(80_000);
    assert_eq!(p.pending_interrupt(), Some(0xED));
    // CR8 is TPR[7:4].
    p.set_cr8(0xF);
    assert_eq!(p.rdmsr(0x808), Some(Ok(0xF0)));
    assert_eq!(p.pending_interrupt(), None);
}

#[test]
fn summary_line() {
    let mut p = pc();
    enable_lapic(&mut p);
    p.mmio_write(APIC + 0x320, 4, 0x2_00EC);
    p.mmio_write(APIC + 0x380, 4, 1000); // divide by 2 after reset: 2000 TSC ticks
    let s = format!("{}", p.summary());
    assert!(s.starts_with("apic xapic tpr=0x0 timer periodic vec=0xec"), "{s}");
    assert!(s.contains("pending none") && s.contains("next tsc 2000"), "{s}");
}

#[test]
fn reset_keeps_time_and_restores_power_on_state() {
    let mut p = pc();
    enable_lapic(&mut p);
    p.wrmsr(0x1B, 0xFEE0_0000 | 3 << 10).unwrap().unwrap();
    p.advance(1_000_000);
    p.io_out(0x64, 1, 0xFE);
    assert_eq!(p.poll_event(), Some(Event::Reset));
    p.reset();
    assert_eq!(p.now(), 1_000_000);
    assert_eq!(p.rdmsr(0x1B), Some(Ok(0xFEE0_0900)), "xAPIC mode again");
    // A timer armed right after the reset counts from now, not from TSC 0.
    p.mmio_write(APIC + 0x3E0, 4, 0xB);
    p.mmio_write(APIC + 0xF0, 4, 0x1FF);
    p.mmio_write(APIC + 0x320, 4, 0x40);
    p.mmio_write(APIC + 0x380, 4, 500);
    assert_eq!(p.next_deadline_tsc(), Some(1_000_500));
}

/// xorshift64*: a fixed, dependency-free stream of pseudo-random numbers.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A hostile L1: random port, MMIO and MSR traffic aimed at every device,
/// random time steps, injection of whatever is pending. Nothing may panic
/// (overflow checks are on in tests), time never runs backwards, and what
/// the platform offers for injection is always a vector the CPU can take.
#[test]
fn hostile_register_traffic_never_panics() {
    const PORTS: [u16; 34] = [
        0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0x3F8, 0x3F9, 0x3FA,
        0x3FB, 0x3FC, 0x3FD, 0x3FE, 0x3FF, 0x600, 0x602, 0x604, 0x608, 0x60, 0x64, 0x80, 0x92, 0xCF8, 0xCFC,
        0xCFE, 0xCF9, 0x8900,
    ];
    for seed in 1..=8u64 {
        let mut interrupts = 0u32;
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut cfg = Config::new(1_000_000 + r.below(3_000_000_000), 256 << 20, r.below(1 << 40));
        cfg.lapic_timer_hz = 1_000_000 + r.below(1_000_000_000);
        let mut p = Platform::new(cfg);
        let mut now = 0u64;
        for _ in 0..60_000 {
            let size = [1u8, 2, 4, 3, 8][r.below(5) as usize];
            match r.below(12) {
                0 | 1 => {
                    let port = PORTS[r.below(PORTS.len() as u64) as usize].wrapping_add(r.below(2) as u16);
                    p.io_out(port, size, r.next() as u32);
                }
                2 | 3 => {
                    let port = PORTS[r.below(PORTS.len() as u64) as usize];
                    let v = p.io_in(port, size);
                    if size < 4 && size != 3 {
                        assert!(v < 1 << (8 * size as u32), "port {port:#x} size {size} gave {v:#x}");
                    }
                }
                4 | 5 => {
                    let base = if r.below(2) == 0 { LAPIC_BASE } else { IOAPIC_BASE };
                    let gpa = base + r.below(0x1000);
                    if r.below(2) == 0 {
                        p.mmio_write(gpa, size, r.next());
                    } else {
                        p.mmio_read(gpa, size);
                    }
                }
                6 => {
                    let msr = [0x1B, 0x6E0, 0x800 + r.below(0x100) as u32][r.below(3) as usize];
                    let v = if r.below(2) == 0 { r.next() } else { r.next() & 0xFFFF_FFFF & !0xF00 | 0xFEE0_0900 };
                    let _ = p.wrmsr(msr, v);
                    let _ = p.rdmsr(msr);
                }
                7 | 8 => {
                    let bits = r.below(40);
                    now = now.saturating_add(r.below(1 << bits));
                    // Now and then a TSC near the end of its range.
                    if r.below(2_000) == 0 {
                        now = now.max(u64::MAX - r.below(1 << 40));
                    }
                    p.advance(now);
                }
                9 => {
                    if let Some(v) = p.pending_interrupt() {
                        interrupts += 1;
                        p.acknowledge(v);
                    }
                    if p.pending_nmi() {
                        p.acknowledge_nmi();
                    }
                }
                10 => {
                    p.uart_receive(r.next() as u8);
                    while p.uart_take_tx().is_some() {}
                }
                _ => {
                    if r.below(50) == 0 {
                        p.reset();
                    }
                    let _ = p.poll_event();
                    let _ = format!("{}", p.summary());
                }
            }
            assert_eq!(p.now(), now);
        }
        assert!(interrupts > 0, "seed {seed}: the traffic never raised an interrupt");
    }
}

#[test]
fn apic_base_reserved_bits_follow_maxphyaddr() {
    let mut p = pc();
    assert_eq!(p.wrmsr(0x1B, 0x10_FEE0_0900), Some(Err(Gp)), "bit 36 with MAXPHYADDR 36");
    let mut cfg = Config::new(50_000_000, 256 << 20, 0);
    cfg.phys_addr_bits = 39;
    let mut p = Platform::new(cfg);
    assert_eq!(p.wrmsr(0x1B, 0x10_FEE0_0900), Some(Ok(())));
    assert!(p.is_mmio(0x10_FEE0_0030) && !p.is_mmio(0xFEE0_0030), "the page moved");
}

#[test]
fn a_pc_without_apics() {
    let mut cfg = Config::new(50_000_000, 256 << 20, 0);
    cfg.lapic = false;
    cfg.ioapic = false;
    let mut p = Platform::new(cfg);
    assert_eq!(p.rdmsr(0x1B), Some(Err(Gp)), "no APIC: IA32_APIC_BASE does not exist");
    assert!(!p.is_mmio(LAPIC_BASE) && !p.is_mmio(IOAPIC_BASE));
    assert_eq!(p.mmio_read(IOAPIC_BASE, 4), None);
    init_pic(&mut p, 0xFE, 0xFF);
    pit_periodic(&mut p, 100);
    p.advance(p.next_deadline_tsc().unwrap());
    assert_eq!(p.pending_interrupt(), Some(0x20), "the 8259 drives INTR directly");
}

/// `io_in_pure` answers exactly what `io_in` answers for the reads it
/// takes (two identical PCs, one read each way, at the same times), takes
/// nothing else, and changes no interrupt line or deadline.
#[test]
fn pure_reads_equal_io_in_and_change_nothing() {
    let setup = |p: &mut Platform| {
        init_pic(p, 0xFE, 0xFF);
        pit_periodic(p, 1000);
        // Counter 2 in mode 0 with the gate high, as Linux calibrates.
        p.io_out(0x61, 1, 0x01);
        p.io_out(0x43, 1, 0xB0);
        p.io_out(0x42, 1, 0xFF);
        p.io_out(0x42, 1, 0xFF);
    };
    let (mut a, mut b) = (pc(), pc());
    setup(&mut a);
    setup(&mut b);
    let deadline = a.next_deadline_tsc().unwrap();
    assert_eq!(deadline, b.next_deadline_tsc().unwrap());
    let mut t = a.now();
    let step = (deadline - t) / 80;
    for (port, size) in [(0x61u16, 1u8), (0x42, 1), (0x42, 1), (0x40, 1), (pm::PM_TMR, 4), (0x3FD, 1), (0x64, 1)].iter().cycle().take(70) {
        t += step;
        a.advance(t);
        let want = a.io_in(*port, *size);
        assert_eq!(b.io_in_pure(*port, *size, t), Some(want), "port {port:#x} at {t}");
        assert_eq!(b.pending_interrupt(), None);
        assert_eq!(b.next_deadline_tsc(), Some(deadline));
    }
    // Past the deadline the full advance sees IRQ0's edge, as it would have.
    b.advance(deadline);
    assert_eq!(b.pending_interrupt(), Some(0x20));
    // COM1's LSR with an error bit to clear (an overrun) is not pure.
    for _ in 0..17 {
        b.uart_receive(b'x');
    }
    assert_eq!(b.io_in_pure(0x3FD, 1, deadline), None);
    assert_eq!(b.io_in(0x3FD, 1) & 0x02, 0x02);
    assert_eq!(b.io_in_pure(0x3FD, 1, deadline), Some(0x61));
    // Reads with side effects or other widths go the general way.
    for (port, size) in [(0x20u16, 1u8), (0x3FE, 1), (0x3F8, 1), (0x60, 1), (0x71, 1), (0x61, 2), (0x42, 4), (pm::PM_TMR, 1), (0x600, 2)] {
        assert_eq!(b.io_in_pure(port, size, deadline), None, "port {port:#x} size {size}");
    }
    let mut no_acpi = Platform::new(Config { acpi: false, ..Config::new(50_000_000, 256 << 20, 0) });
    assert_eq!(no_acpi.io_in_pure(pm::PM_TMR, 4, 1), None);
}
