/*
 * kvmtest — runs an L2 guest through /dev/kvm and checks everything it sees.
 *
 * Static (musl), for the initramfs of the Linux-as-L1 runs. One VM, one vCPU,
 * no in-kernel irqchip (so HLT and interrupt windows come to us), 256 KiB of
 * RAM at guest-physical 0; everything else is MMIO handled here.
 *
 * Two phases, the same work in each: 16-bit real mode, then 64-bit long mode.
 * Per iteration i (counting down from N to 1), the guest
 *   - executes CPUID leaf 0x40000000 and writes EBX to port 0x10: it must be
 *     "KVMK" — KVM's own leaf, so only KVM (the L1) can have answered it;
 *   - reads port 0x12 (we answer 0x1000 + i) and writes that value + 1 to
 *     port 0x13;
 *   - writes i to MMIO (real mode 0xA0000, long mode 0x10000000: no memslot —
 *     KVM sees an EPT violation the first time, then EPT misconfigurations
 *     once it has cached the MMIO SPTE), reads MMIO + 4 (we answer 3i + 1)
 *     and writes that value to port 0x14;
 * then, once per phase,
 *   - clears IF, writes port 0x15 (we ask KVM for an interrupt window while
 *     IF = 0), sets IF and waits (bounded) for its flag: KVM exits with
 *     KVM_EXIT_IRQ_WINDOW_OPEN, we inject vector 0x21, whose handler sets
 *     the flag and writes 0x21 to port 0x11;
 *   - sets IF and executes HLT: KVM_EXIT_HLT, we inject vector 0x20 (handler
 *     writes 0x20 to port 0x11), the guest continues after HLT;
 *   - writes port 0x1f: end of phase.
 * Every value is checked when it arrives, every count at the end of a phase.
 * Output: one line per phase and one `kvmtest: PASS …` or `kvmtest: FAIL …`
 * line; the counts are deterministic, only the time varies.
 *
 * Usage: kvmtest [N]   (default 200 iterations per phase)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE 0x40000
#define RM_CODE 0x1000
#define LM_CODE 0x3000
#define GDT 0x0500
#define IDT 0x9000
#define PML4 0xA000
#define PDPT 0xB000
#define PD 0xC000
#define LM_STACK 0x20000
#define RM_MMIO 0xA0000
#define LM_MMIO 0x10000000ULL
#define KVM_SIG_EBX 0x4b4d564bu /* "KVMK" */

/* The guest code: assembled here, copied into guest memory. */
extern const unsigned char rm_start[], rm_end[], lm_start[], lm_end[];
asm(".pushsection .rodata\n"
    ".code16\n"
    "rm_start:\n"
    "  cli\n"
    "  xor %ax, %ax\n"
    "  mov %ax, %ds\n"
    "  mov %ax, %ss\n"
    "  mov $0x8000, %sp\n"
    "  movw $(rm_irq20 - rm_start + 0x1000), 0x80\n" /* IVT[0x20] */
    "  movw $0, 0x82\n"
    "  movw $(rm_irq21 - rm_start + 0x1000), 0x84\n" /* IVT[0x21] */
    "  movw $0, 0x86\n"
    "  mov $0xA000, %ax\n"
    "  mov %ax, %es\n"
    "1:\n"
    "  mov $0x40000000, %eax\n"
    "  xor %ecx, %ecx\n"
    "  cpuid\n"
    "  mov %ebx, %eax\n"
    "  mov $0x10, %dx\n"
    "  out %eax, %dx\n"
    "  mov $0x12, %dx\n"
    "  in %dx, %eax\n"
    "  inc %eax\n"
    "  mov $0x13, %dx\n"
    "  out %eax, %dx\n"
    "  mov %esi, %es:0\n"
    "  mov %es:4, %eax\n"
    "  mov $0x14, %dx\n"
    "  out %eax, %dx\n"
    "  dec %esi\n"
    "  jnz 1b\n"
    "  movb $0, 0x600\n"
    "  mov $0x15, %dx\n"
    "  out %al, %dx\n"
    "  sti\n"
    "  mov $10000000, %ecx\n" /* wait (bounded) for vector 0x21 */
    "3:\n"
    "  cmpb $0, 0x600\n"
    "  jne 4f\n"
    "  dec %ecx\n"
    "  jnz 3b\n"
    "4:\n"
    "  hlt\n"
    "  cli\n"
    "  mov $0x1f, %dx\n"
    "  out %al, %dx\n"
    "  hlt\n"
    "rm_irq20:\n"
    "  mov $0x20, %al\n"
    "  jmp 2f\n"
    "rm_irq21:\n"
    "  movb $1, 0x600\n"
    "  mov $0x21, %al\n"
    "2:\n"
    "  mov $0x11, %dx\n"
    "  out %al, %dx\n"
    "  iret\n"
    "rm_end:\n"
    ".code64\n"
    "lm_start:\n"
    "  mov $0x10000000, %rdi\n"
    "1:\n"
    "  mov $0x40000000, %eax\n"
    "  xor %ecx, %ecx\n"
    "  cpuid\n"
    "  mov %ebx, %eax\n"
    "  mov $0x10, %dx\n"
    "  out %eax, %dx\n"
    "  mov $0x12, %dx\n"
    "  in %dx, %eax\n"
    "  inc %eax\n"
    "  mov $0x13, %dx\n"
    "  out %eax, %dx\n"
    "  mov %esi, (%rdi)\n"
    "  mov 4(%rdi), %eax\n"
    "  mov $0x14, %dx\n"
    "  out %eax, %dx\n"
    "  dec %esi\n"
    "  jnz 1b\n"
    "  movb $0, 0x600\n"
    "  mov $0x15, %dx\n"
    "  out %al, %dx\n"
    "  sti\n"
    "  mov $10000000, %ecx\n"
    "3:\n"
    "  cmpb $0, 0x600\n"
    "  jne 4f\n"
    "  dec %ecx\n"
    "  jnz 3b\n"
    "4:\n"
    "  hlt\n"
    "  cli\n"
    "  mov $0x1f, %dx\n"
    "  out %al, %dx\n"
    "  hlt\n"
    "lm_irq20:\n"
    "  push %rax\n"
    "  push %rdx\n"
    "  mov $0x20, %al\n"
    "  jmp 2f\n"
    "lm_irq21:\n"
    "  push %rax\n"
    "  push %rdx\n"
    "  movb $1, 0x600\n"
    "  mov $0x21, %al\n"
    "2:\n"
    "  mov $0x11, %dx\n"
    "  out %al, %dx\n"
    "  pop %rdx\n"
    "  pop %rax\n"
    "  iretq\n"
    "lm_end:\n"
    ".set lm_irq20_off, lm_irq20 - lm_start\n"
    ".set lm_irq21_off, lm_irq21 - lm_start\n"
    ".globl lm_irq_offsets\n"
    "lm_irq_offsets: .quad lm_irq20 - lm_start, lm_irq21 - lm_start\n"
    ".popsection\n");
extern const uint64_t lm_irq_offsets[2];

static int failed;
static char why[512];

static void fail(const char *fmt, ...) {
    if (failed++)
        return; /* the first failure is the one that matters */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
}

static void die(const char *what) {
    printf("kvmtest: FAIL %s: %s\n", what, strerror(errno));
    exit(1);
}

struct counts {
    unsigned io, mmio, hlt, irq_window, irqs, other, exits;
};

static int kvm, vm, vcpu;
static struct kvm_run *run;
static uint8_t *mem;

/* Runs the vCPU until the guest writes port 0x1f; checks everything on the way. */
static void phase(const char *name, uint32_t n, struct counts *c) {
    uint32_t i = n;          /* the guest's counter, as we expect it */
    int step = 0;            /* position inside one iteration: 0 cpuid, 1 in, 2 out, 3 mmio w, 4 mmio r, 5 port */
    int want_window = 0, irq20 = 0, irq21 = 0, hlted = 0;
    uint64_t mmio_base = strcmp(name, "real") == 0 ? RM_MMIO : LM_MMIO;
    for (;;) {
        run->request_interrupt_window = want_window;
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR)
                continue;
            die("KVM_RUN");
        }
        c->exits++;
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            c->io++;
            uint8_t *data = (uint8_t *)run + run->io.data_offset;
            uint32_t v = 0;
            memcpy(&v, data, run->io.size < 4 ? run->io.size : 4);
            uint16_t port = run->io.port;
            int out = run->io.direction == KVM_EXIT_IO_OUT;
            if (port == 0x10 && out && step == 0) {
                if (v != KVM_SIG_EBX)
                    fail("%s i=%u: CPUID 0x40000000 EBX %#x, not KVM's %#x", name, i, v, KVM_SIG_EBX);
                step = 1;
            } else if (port == 0x12 && !out && step == 1) {
                v = 0x1000 + i;
                memcpy(data, &v, 4);
                step = 2;
            } else if (port == 0x13 && out && step == 2) {
                if (v != 0x1000 + i + 1)
                    fail("%s i=%u: port 0x13 got %#x, want %#x", name, i, v, 0x1000 + i + 1);
                step = 3;
            } else if (port == 0x14 && out && step == 5) {
                if (v != 3 * i + 1)
                    fail("%s i=%u: MMIO read value came back as %#x, want %#x", name, i, v, 3 * i + 1);
                step = 0;
                i--;
            } else if (port == 0x15 && out && i == 0) {
                if (run->ready_for_interrupt_injection)
                    fail("%s: KVM says an interrupt can be injected while the guest has IF=0", name);
                want_window = 1;
            } else if (port == 0x11 && out) {
                c->irqs++;
                if (v == 0x20 && hlted && !irq20)
                    irq20 = 1;
                else if (v == 0x21 && !irq21)
                    irq21 = 1;
                else
                    fail("%s: unexpected interrupt handler run for vector %#x", name, v);
            } else if (port == 0x1f && out) {
                if (i != 0 || !irq20 || !irq21 || !hlted)
                    fail("%s: phase ended early (i=%u, irq20 %d, irq21 %d, hlt %d)", name, i, irq20, irq21, hlted);
                return;
            } else {
                fail("%s i=%u step %d: unexpected %s of port %#x value %#x", name, i, step, out ? "out" : "in", port, v);
                return;
            }
            break;
        }
        case KVM_EXIT_MMIO: {
            c->mmio++;
            uint32_t v = 0;
            if (run->mmio.is_write && step == 3 && run->mmio.phys_addr == mmio_base && run->mmio.len == 4) {
                memcpy(&v, run->mmio.data, 4);
                if (v != i)
                    fail("%s i=%u: MMIO write of %#x", name, i, v);
                step = 4;
            } else if (!run->mmio.is_write && step == 4 && run->mmio.phys_addr == mmio_base + 4 && run->mmio.len == 4) {
                v = 3 * i + 1;
                memcpy(run->mmio.data, &v, 4);
                step = 5;
            } else {
                fail("%s i=%u step %d: unexpected MMIO %s at %#llx len %u", name, i, step,
                     run->mmio.is_write ? "write" : "read", (unsigned long long)run->mmio.phys_addr, run->mmio.len);
                return;
            }
            break;
        }
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            c->irq_window++;
            if (!want_window || !run->ready_for_interrupt_injection || !run->if_flag) {
                fail("%s: interrupt window exit without a window (asked %d, ready %d, IF %d)", name, want_window,
                     run->ready_for_interrupt_injection, run->if_flag);
                return;
            }
            want_window = 0;
            {
                struct kvm_interrupt irq = {.irq = 0x21};
                if (ioctl(vcpu, KVM_INTERRUPT, &irq) < 0)
                    die("KVM_INTERRUPT 0x21");
            }
            break;
        case KVM_EXIT_HLT:
            c->hlt++;
            if (i != 0 || !irq21 || hlted) {
                fail("%s: HLT at the wrong time (i=%u, irq21 %d)", name, i, irq21);
                return;
            }
            hlted = 1;
            if (!run->ready_for_interrupt_injection || !run->if_flag) {
                fail("%s: HLT with IF=1 but KVM cannot inject (ready %d, IF %d)", name,
                     run->ready_for_interrupt_injection, run->if_flag);
                return;
            }
            {
                struct kvm_interrupt irq = {.irq = 0x20};
                if (ioctl(vcpu, KVM_INTERRUPT, &irq) < 0)
                    die("KVM_INTERRUPT 0x20");
            }
            break;
        case KVM_EXIT_INTR:
            c->exits--; /* a signal, not the guest */
            break;
        case KVM_EXIT_FAIL_ENTRY:
            fail("%s: VM-entry failure, hardware reason %#llx", name,
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
            return;
        case KVM_EXIT_INTERNAL_ERROR:
            fail("%s: KVM internal error, suberror %u", name, run->internal.suberror);
            return;
        case KVM_EXIT_SHUTDOWN:
            fail("%s: the guest shut down (triple fault)", name);
            return;
        default:
            c->other++;
            fail("%s: unexpected exit reason %u", name, run->exit_reason);
            return;
        }
        if (failed)
            return;
    }
}

static void set_cpuid(void) {
    int nent = 256;
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof *cpuid + nent * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = nent;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
        die("KVM_GET_SUPPORTED_CPUID");
    if (ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0)
        die("KVM_SET_CPUID2");
    free(cpuid);
}

static void print_phase(const char *name, uint32_t n, const struct counts *c) {
    printf("kvmtest: %s mode: cpuid %u, io %u, mmio %u, hlt %u, irq-window %u, interrupts %u, exits to user %u\n",
           name, n, c->io, c->mmio, c->hlt, c->irq_window, c->irqs, c->exits);
}

int main(int argc, char **argv) {
    uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], 0, 0) : 200;
    if (n == 0 || n > 1000000) {
        printf("kvmtest: FAIL usage: kvmtest [iterations 1..1000000]\n");
        return 2;
    }
    setvbuf(stdout, 0, _IOLBF, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);

    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        die("open /dev/kvm");
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        die("KVM_GET_API_VERSION");
    vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        die("KVM_CREATE_VM");
    /* Intel: KVM needs a TSS region below 4 GiB for real mode (vmx_set_tss_addr). */
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000) < 0)
        die("KVM_SET_TSS_ADDR");
    mem = mmap(0, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        die("mmap");
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = (uintptr_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
        die("KVM_SET_USER_MEMORY_REGION");
    vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        die("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < 0)
        die("KVM_GET_VCPU_MMAP_SIZE");
    run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        die("mmap kvm_run");
    set_cpuid();

    /* Phase 1: real mode at 0000:1000. */
    memcpy(mem + RM_CODE, rm_start, rm_end - rm_start);
    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
        die("KVM_GET_SREGS");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    struct kvm_regs regs = {.rip = RM_CODE, .rsi = n, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
        die("KVM_SET_(S)REGS real mode");
    struct counts rm = {0};
    phase("real", n, &rm);
    if (!failed)
        print_phase("real", n, &rm);

    /* Phase 2: long mode, identity-mapped first GiB (2 MiB pages), flat segments. */
    struct counts lm = {0};
    if (!failed) {
        memcpy(mem + LM_CODE, lm_start, lm_end - lm_start);
        uint64_t *pml4 = (uint64_t *)(mem + PML4), *pdpt = (uint64_t *)(mem + PDPT), *pd = (uint64_t *)(mem + PD);
        pml4[0] = PDPT | 3;
        pdpt[0] = PD | 3;
        for (int e = 0; e < 512; e++)
            pd[e] = ((uint64_t)e << 21) | 0x83; /* present, writable, 2 MiB */
        uint64_t *gdt = (uint64_t *)(mem + GDT);
        gdt[0] = 0;
        gdt[1] = 0x00209A0000000000ULL; /* 0x08: 64-bit code */
        gdt[2] = 0x0000920000000000ULL; /* 0x10: data */
        for (int v = 0; v < 2; v++) {    /* interrupt gates for 0x20, 0x21 */
            uint64_t h = LM_CODE + lm_irq_offsets[v];
            uint64_t *gate = (uint64_t *)(mem + IDT + (0x20 + v) * 16);
            gate[0] = (h & 0xffff) | (0x08ULL << 16) | (0x8EULL << 40) | ((h >> 16 & 0xffff) << 48);
            gate[1] = h >> 32;
        }
        if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
            die("KVM_GET_SREGS");
        struct kvm_segment code = {.base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11, .present = 1,
                                   .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
        struct kvm_segment data = {.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 3, .present = 1,
                                   .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
        sregs.cs = code;
        sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 3 * 8 - 1;
        sregs.idt.base = IDT;
        sregs.idt.limit = 0x22 * 16 - 1;
        sregs.cr3 = PML4;
        sregs.cr4 = 1u << 5;                           /* PAE */
        sregs.cr0 = 0x80000001u | (1u << 4) | (1u << 5); /* PG, PE, ET, NE */
        sregs.efer = (1u << 8) | (1u << 10);           /* LME, LMA */
        struct kvm_regs r64 = {.rip = LM_CODE, .rsi = n, .rsp = LM_STACK, .rflags = 2};
        if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu, KVM_SET_REGS, &r64) < 0)
            die("KVM_SET_(S)REGS long mode");
        phase("long", n, &lm);
        if (!failed)
            print_phase("long", n, &lm);
    }

    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    unsigned exits = rm.exits + lm.exits;
    if (failed) {
        printf("kvmtest: FAIL %s (exits to user %u, %.2f s)\n", why, exits, secs);
        return 1;
    }
    printf("kvmtest: PASS cpuid %u, io %u, mmio %u, hlt %u, irq-window %u, interrupts %u, exits to user %u, time %.2f s\n",
           2 * n, rm.io + lm.io, rm.mmio + lm.mmio, rm.hlt + lm.hlt, rm.irq_window + lm.irq_window, rm.irqs + lm.irqs,
           exits, secs);
    return 0;
}
