# Linux as L1 — included by the top-level Makefile.
#
# The one pin: the Debian version of bookworm's `linux-image-cloud-amd64`
# (the cloud flavour boots fastest in Bochs: LZ4, few drivers). linux/build.sh
# resolves the ABI it names (linux-image-6.1.0-NN-cloud-amd64) with apt-cache
# and stops with a clear message when the archive no longer has it.
LINUX_VERSION ?= 6.1.192-3
LINUX_DIR     := build/linux
LINUX_PKGS    := musl-tools linux-libc-dev cpio binutils
# Boot options that matter in Bochs (../shared/L1-PLATFORM.md): no KASLR or
# mitigations, no crypto self-tests, quiet (the 8250 console busy-waits per
# character), a reliable TSC (Bochs' TSC counts instructions).
LINUX_FAST    := nokaslr mitigations=off nowatchdog tsc=reliable cryptomgr.notests \
                 initcall_blacklist=crypto_kdf108_init,load_system_certificate_list,trace_eval_init,init_kprobe_trace quiet
# The smallest PC (8259, PIT, RTC, UART only).
LINUX_SMALLPC := acpi=off noapic nolapic hpet=disable pci=off io_delay=none i8042.nokbd i8042.noaux
LINUX_CMDLINE ?= console=ttyS0,115200 $(LINUX_FAST) kvmtest=200 then=poweroff
LINUX_IPS     ?= 50000000

# nvmx with this Linux as the L1 (GRUB module2 lines: the kernel with its
# command line, then the initrd). One core: the L1 runs on the boot core.
LINUX_NVMX    ?= log=info l1mem=256
LINUX_NESTED_SMALLPC := console=ttyS0,115200 $(LINUX_FAST) $(LINUX_SMALLPC) kvmtest=200 then=poweroff
LINUX_NESTED_FULLPC  := console=ttyS0,115200 $(LINUX_FAST) kvmtest=200 then=poweroff

# The smallest PC's nested run (nested-smallpc.iso): two cores, Linux with
# kvmtest on core 1, the built-in L1's forum on core 0. The shell runs on the
# boot core between that core's exits: with Linux there, the test's polling
# stalled Linux in its PIT calibration (no HPET or PM timer to fall back on:
# tsc_khz 0, and KVM loops before its first VMLAUNCH).
LINUX_NESTED2_NVMX   := $(LINUX_NVMX) l1image0=builtin l1args0=workload=forum,exits=500

# The attach test's machines (2 cores): Linux with a shell on its ttyS0
# (nvmx.shell=1: no modules, no kvmtest) as core 1's L1, the built-in L1's
# forum workload on core 0 (l1image0=builtin), to its end. Linux is not on
# the boot core: the shell runs there between that core's exits, and each
# shell command (`console`, `l1`) would stall Linux for its whole output.
LINUX_ATTACH_NVMX    := $(LINUX_NVMX) l1image0=builtin l1args0=workload=forum,exits=2000
# Bochs' instructions per emulated second for Linux under nvmx. Bochs' TSC
# counts instructions, so L0's handling of an exit (~800 instructions for an
# emulated port read) lasts 16 us of the L1's time at 50M, more than Linux's
# PIT calibration allows per read (10 us: 1000 reads in 10 ms) and its
# PM-timer refinement per three reads (31 us): calibration fails ("Fast TSC
# calibration failed", no switch to the tsc clocksource; on the smallest PC
# tsc_khz stays 0). At 200M an exit lasts ~4 us (real hardware: ~1 us).
LINUX_NESTED_IPS     ?= 200000000
LINUX_SHELL_FULLPC   := console=ttyS0,115200 $(LINUX_FAST) nvmx.shell=1
LINUX_SHELL_SMALLPC  := console=ttyS0,115200 $(LINUX_FAST) $(LINUX_SMALLPC) nvmx.shell=1

.PHONY: linux linux-deps run-linux-bare run-linux-nested test-linux-nested

linux-deps:
	@missing=""; for p in $(LINUX_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# kvmtest: static with musl; the kernel's uapi headers (linux-libc-dev) are
# linked in an include directory of their own, musl has none.
$(LINUX_DIR)/kvmtest: linux/kvmtest.c | linux-deps
	@mkdir -p $(LINUX_DIR)/include
	ln -sfn /usr/include/linux $(LINUX_DIR)/include/linux
	ln -sfn /usr/include/asm-generic $(LINUX_DIR)/include/asm-generic
	ln -sfn /usr/include/x86_64-linux-gnu/asm $(LINUX_DIR)/include/asm
	musl-gcc -static -O2 -Wall -Wextra -Werror -I$(LINUX_DIR)/include -o $@ $<

$(LINUX_DIR)/initrd.img: $(LINUX_DIR)/kvmtest linux/init linux/build.sh linux/linux.mk | deps linux-deps
	linux/build.sh $(LINUX_VERSION) $(LINUX_DIR)

$(LINUX_DIR)/bare.iso: $(LINUX_DIR)/initrd.img linux/mkiso.sh
	linux/mkiso.sh $(LINUX_DIR)/vmlinuz $(LINUX_DIR)/initrd.img $@ $(LINUX_CMDLINE)

$(LINUX_DIR)/nested-smallpc.iso: $(LINUX_DIR)/initrd.img kernel
	L1_MODULE=$(LINUX_DIR)/vmlinuz L1_MODULE_ARGS="$(LINUX_NESTED_SMALLPC)" L1_MODULE_1=$(LINUX_DIR)/initrd.img \
	  L1_MODULE_1_ARGS=initrd grub/mkiso.sh $(KERNEL_ELF) $@ $(LINUX_NESTED2_NVMX)

$(LINUX_DIR)/nested.iso: $(LINUX_DIR)/initrd.img kernel
	L1_MODULE=$(LINUX_DIR)/vmlinuz L1_MODULE_ARGS="$(LINUX_NESTED_FULLPC)" L1_MODULE_1=$(LINUX_DIR)/initrd.img \
	  L1_MODULE_1_ARGS=initrd grub/mkiso.sh $(KERNEL_ELF) $@ $(LINUX_NVMX)

$(LINUX_DIR)/shell.iso: $(LINUX_DIR)/initrd.img kernel
	L1_MODULE=$(LINUX_DIR)/vmlinuz L1_MODULE_ARGS="$(LINUX_SHELL_FULLPC)" L1_MODULE_1=$(LINUX_DIR)/initrd.img \
	  L1_MODULE_1_ARGS=initrd grub/mkiso.sh $(KERNEL_ELF) $@ $(LINUX_ATTACH_NVMX)

$(LINUX_DIR)/shell-smallpc.iso: $(LINUX_DIR)/initrd.img kernel
	L1_MODULE=$(LINUX_DIR)/vmlinuz L1_MODULE_ARGS="$(LINUX_SHELL_SMALLPC)" L1_MODULE_1=$(LINUX_DIR)/initrd.img \
	  L1_MODULE_1_ARGS=initrd grub/mkiso.sh $(KERNEL_ELF) $@ $(LINUX_ATTACH_NVMX)

# Everything the Linux runs need: kernel, initrd, the bare reference ISO,
# nvmx ISOs with that Linux as L1 (smallest PC, then the full one), and the
# attach test's ISOs (Linux's shell on core 1, the built-in L1 on core 0).
linux: $(LINUX_DIR)/bare.iso $(LINUX_DIR)/nested-smallpc.iso $(LINUX_DIR)/nested.iso \
       $(LINUX_DIR)/shell.iso $(LINUX_DIR)/shell-smallpc.iso

# Debian's Linux on bare Bochs (no nvmx): the reference. Loads kvm_intel,
# runs kvmtest, powers off. MODEL= picks the CPU.
run-linux-bare: linux
	tools/bochsrc.sh $(LINUX_DIR)/bare.iso $(MODEL) 1 512 "mode=term, dev=$$(tty)" build/bochs-linux.log $(LINUX_IPS) > build/bochsrc-linux
	@echo c > build/bochs-cont.rc
	bochs -q -f build/bochsrc-linux -rc build/bochs-cont.rc; status=$$?; [ $$status -le 1 ] || exit $$status

# nvmx on Bochs with Debian's Linux as L1 (LINUX_PC=smallpc: acpi=off noapic
# nolapic …, two cores, Linux on core 1; default: ACPI, LAPIC and IOAPIC on,
# one core). The nvmx shell is on this terminal; `console 0` (`console 1`
# for smallpc) shows Linux's output.
LINUX_PC ?=
run-linux-nested: linux
	tools/bochsrc.sh $(LINUX_DIR)/nested$(if $(LINUX_PC),-$(LINUX_PC)).iso $(MODEL) $(if $(LINUX_PC),2,1) 768 "mode=term, dev=$$(tty)" build/bochs-linux.log $(LINUX_NESTED_IPS) > build/bochsrc-linux
	@echo c > build/bochs-cont.rc
	bochs -q -f build/bochsrc-linux -rc build/bochs-cont.rc; status=$$?; [ $$status -le 1 ] || exit $$status

# The nested Linux system tests (slow: 10-20 minutes of Bochs each; not in
# `make test` until they pass — see tests/README.md).
test-linux-nested: iso linux
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) test -p nvmx-tests --test system -- --include-ignored bochs_linux_nested --test-threads=1 --nocapture
