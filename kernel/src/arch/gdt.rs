//! Per-core GDT and TSS. Each core gets its own TSS because the TSS holds the
//! interrupt-stack-table pointers: #DF, NMI and #MC run on stacks of their own
//! so a kernel stack overflow still gets reported instead of triple-faulting.

use alloc::boxed::Box;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slots (1-based in the IDT, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u16 = 1;
pub const IST_NMI: u16 = 2;
pub const IST_MACHINE_CHECK: u16 = 3;
const IST_STACK_SIZE: usize = 16 * 1024;

/// Kernel segment selectors, the same on every core (VMX host state uses them).
pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const KERNEL_TR: u16 = 0x18;

/// What a core keeps of its descriptor tables (the GDT itself is leaked:
/// loaded once, it lives forever).
pub struct CpuTables {
    pub tss: &'static TaskStateSegment,
}

/// Builds and loads this core's GDT and TSS.
pub fn init_this_cpu() -> CpuTables {
    let mut tss = TaskStateSegment::new();
    for slot in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK] {
        let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; IST_STACK_SIZE].into_boxed_slice());
        let top = VirtAddr::from_ptr(stack.as_ptr()) + IST_STACK_SIZE as u64;
        tss.interrupt_stack_table[usize::from(slot - 1)] = top.align_down(16u64);
    }
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss));

    let mut gdt = GlobalDescriptorTable::new();
    let cs = gdt.append(Descriptor::kernel_code_segment());
    let ds = gdt.append(Descriptor::kernel_data_segment());
    let tr = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!((cs.0, ds.0, tr.0), (KERNEL_CS, KERNEL_DS, KERNEL_TR));
    let gdt: &'static GlobalDescriptorTable = Box::leak(Box::new(gdt));
    gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which lives forever.
    unsafe {
        CS::set_reg(SegmentSelector(KERNEL_CS));
        SS::set_reg(SegmentSelector(KERNEL_DS));
        DS::set_reg(SegmentSelector(KERNEL_DS));
        ES::set_reg(SegmentSelector(KERNEL_DS));
        load_tss(SegmentSelector(KERNEL_TR));
    }
    CpuTables { tss }
}
