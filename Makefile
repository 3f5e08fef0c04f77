# nvmx — build, run and test. `make help` lists targets and variables.
# `make run` and `make test` install what they need (Debian packages, the
# pinned Rust toolchain) on a fresh machine.

TOOLCHAIN   := nightly-2026-05-19
CARGO       := cargo +$(TOOLCHAIN)
PROFILE     ?= release
CPUS        ?= 2
MODEL       ?= corei7_haswell_4770
MEM         ?= 256
CMDLINE     ?= log=info
ISO         := build/nvmx.iso
TARGET_JSON := x86_64-nvmx.json
BUILD_STD   := -Zbuild-std=core,alloc,compiler_builtins -Zbuild-std-features=compiler-builtins-mem
PROFILE_DIR := target/x86_64-nvmx/$(if $(filter dev debug,$(PROFILE)),debug,$(PROFILE))
KERNEL_ELF  := $(PROFILE_DIR)/nvmx
L1_ELF      := $(PROFILE_DIR)/nvmx-l1
L1_ISO      := build/l1-bare.iso
L1_ARGS     ?= workload=forum
# Rounds of the race workload in the bare ISO build/l1-race.iso (the system tests run the same count nested).
RACE_ROUNDS ?= 300
# An external L1 for build/nvmx.iso: any Multiboot2 ELF64 kernel (a hypervisor
# of your own); empty = nvmx's built-in L1.
L1_MODULE      ?=
L1_MODULE_ARGS ?=
# make turtles: nvmx's own kernel as the L1 (its command line TURTLES_INNER),
# the built-in L1 as the inner nvmx's module (its L1, TURTLES_L2_ARGS); one
# core (the inner nvmx is a one-CPU PC), outer L1 memory TURTLES_L1MEM MiB.
TURTLES_ISO     := build/turtles.iso
TURTLES_CMDLINE ?= log=info l1mem=192
TURTLES_INNER   ?= log=info
TURTLES_L2_ARGS ?= workload=forum
OVMF        := /usr/share/ovmf/OVMF.fd
DEB_PKGS    := bochs bochsbios vgabios qemu-system-x86 ovmf grub-pc-bin grub-efi-amd64-bin \
               grub-common xorriso mtools python3-matplotlib
# `make plot` runs Debian's Python (python3-matplotlib is installed for it),
# not whatever `python3` comes first on PATH.
PLOT_PYTHON := /usr/bin/python3
# `make run-bochs`: where the generated bochsrc and Bochs' own messages go.
RUN_DIR     ?= build
SUDO        := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all help deps toolchain guest kernel iso bench bench-pio bench-turtles fuzz fuzz-long fuzz-record plot run run-qemu run-qemu-uefi run-bochs turtles \
        run-bochs-only test test-host test-system clean

all: iso

help:
	@echo "nvmx make targets:"
	@echo "  make / make iso    build the kernel and $(ISO) (BIOS+UEFI GRUB ISO), and the"
	@echo "                     built-in L1 alone as $(L1_ISO) (bare runs, L1_ARGS) and"
	@echo "                     build/l1-selftest.iso (its VMX conformance checks), build/l1-platform.iso"
	@echo "                     (its PC checks: ACPI, LAPIC, PIT, IOAPIC, UART, RTC, S5), and"
	@echo "                     build/nvmx-module-l1.iso (nvmx with the L1 as a GRUB module)"
	@echo "  make run           boot with the shell on this terminal: QEMU+KVM -cpu host when"
	@echo "                     /dev/kvm offers VT-x, else Bochs $(MODEL) with CPUS cores"
	@echo "  make run-qemu      QEMU (TCG, no VT-x) BIOS, -serial stdio"
	@echo "  make run-qemu-uefi QEMU with OVMF (UEFI), -serial stdio"
	@echo "  make run-bochs     Bochs MODEL=... CPUS=..., serial on this terminal"
	@echo "  make turtles       nvmx with nvmx as its L1 (build/turtles.iso; the built-in L1 is the"
	@echo "                     inner nvmx's L1) on Bochs MODEL, 1 core: \`attach 0\` = the inner shell"
	@echo "  make test          host unit tests + system tests (QEMU and Bochs)"
	@echo "  make test-host     host unit tests only (cargo test)"
	@echo "  make bench         Bochs haswell: forum workload bare, then nested with VMCS shadowing off"
	@echo "                     and on: L0 path lengths in instructions, modelled nested/bare"
	@echo "                     (BENCH_EXITS, CPUS, BENCH_PAIR = cycles per VM exit/entry pair)"
	@echo "  make bench-linux   Bochs haswell: Debian's KVM as L1, kvmtest; the seed thread's table, shadowing off / fixed / adaptive / full"
	@echo "  make bench-pio     Bochs haswell at BENCH_PIO_IPS: L0 instructions per port read by device,"
	@echo "                     bare vs nested, and Linux's PIT-only TSC calibrations (build/bench-pio.csv)"
	@echo "  make bench-turtles nvmx as its own L1: L0 instructions, transitions and modelled cost per"
	@echo "                     L3 exit, outer/inner shadowing on/on, on/off, off/on (build/bench-turtles.csv)"
	@echo "  make plot          charts of build/bench.csv and build/stats.csv (from make bench) as"
	@echo "                     PNG and SVG under build/ (BENCH_CSV, STATS_CSV, PLOT_DIR)"
	@echo "  make fuzz          the differential VMX fuzzer: the L1's workload=fuzz bare on Bochs"
	@echo "                     MODEL and nested under nvmx, compared (SEED, OPS, SHOW=<op>)"
	@echo "  make linux         fetch Debian's Linux (pin: linux/linux.mk), build its initramfs with"
	@echo "                     kvmtest, and the ISOs build/linux/{bare,nested-smallpc,nested}.iso"
	@echo "  make run-linux-bare    that Linux with KVM alone on Bochs MODEL (the reference)"
	@echo "  make run-linux-nested  nvmx with that Linux as L1 (LINUX_PC=smallpc: acpi=off noapic nolapic)"
	@echo "  make fuzz-long     the fuzzer for hours: SEEDS=1-200 x FUZZ_LONG_OPS=100000 x MODELS=a,b;"
	@echo "                     resumable (build/fuzz-long/state.txt), summary and verdict; not in make test"
	@echo "  make fuzz-record   totals of tools/fuzz-long-record.txt over every session (ops identical, open divergences)"
	@echo "  make deps          install the Debian packages and the pinned toolchain"
	@echo "  make clean"
	@echo "variables:"
	@echo "  PROFILE=$(PROFILE)  (release|dev)   CPUS=$(CPUS)   MEM=$(MEM) (MiB)"
	@echo "  MODEL=$(MODEL)  (Bochs: corei7_ivy_bridge_3770k has no VMCS shadowing)"
	@echo "  CMDLINE='$(CMDLINE)'  (nvmx command line: log=…, l1mem=<MiB>, l1args=a,b,…, l1vcpus=2)"
	@echo "  L1_ARGS='$(L1_ARGS)'  (command line of the bare L1 ISO)"
	@echo "  RACE_ROUNDS=$(RACE_ROUNDS)  (rounds of build/l1-race.iso; nvmx-race.iso boots l1vcpus=2)"
	@echo "  RUN_DIR=$(RUN_DIR)  (make run-bochs: bochsrc, Bochs' messages and log)"
	@echo "  L1_MODULE=<elf> L1_MODULE_ARGS='…'  (run that Multiboot2 kernel as every core's L1"
	@echo "                     instead of the built-in one; build/nvmx-module-l1.iso is the test copy)"

# --- installation -----------------------------------------------------------
deps: toolchain
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  mkdir -p build; \
	  echo "installing Debian packages (once, a few minutes; apt's output in build/deps.log):$$missing"; \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; } \
	    >build/deps.log 2>&1 || { tail -n 20 build/deps.log; echo "make deps: apt-get failed (build/deps.log)"; exit 1; }; \
	fi

toolchain:
	@rustup run $(TOOLCHAIN) rustc --version >/dev/null 2>&1 && \
	  rustup component list --toolchain $(TOOLCHAIN) --installed | grep -q rust-src || \
	  { echo "installing the pinned Rust toolchain $(TOOLCHAIN) with rust-src (once, about a minute)"; \
	    rustup toolchain install $(TOOLCHAIN) --profile minimal --component rust-src; }

# --- build ------------------------------------------------------------------
# The built-in L1 (guest/) is built first: the kernel embeds it.
guest: toolchain
	@echo "building the built-in L1 (guest/; the first build compiles core and alloc too, ~1 min)"
	@$(CARGO) build -p nvmx-guest --target $(TARGET_JSON) $(BUILD_STD) --profile $(PROFILE)

kernel: guest
	@echo "building nvmx (kernel/, with the L1 embedded)"
	@NVMX_L1_ELF=$(CURDIR)/$(L1_ELF) $(CARGO) build -p nvmx-kernel --target $(TARGET_JSON) $(BUILD_STD) \
	  --profile $(PROFILE)

iso: deps kernel
	@mkdir -p build
	@echo "writing the GRUB ISOs under build/"
	@L1_MODULE="$(L1_MODULE)" L1_MODULE_ARGS="$(L1_MODULE_ARGS)" grub/mkiso.sh $(KERNEL_ELF) $(ISO) $(CMDLINE)
	@L1_MODULE=$(L1_ELF) L1_MODULE_ARGS="workload=selftest" grub/mkiso.sh $(KERNEL_ELF) build/nvmx-module-l1.iso $(CMDLINE)
	@grub/mkiso.sh $(KERNEL_ELF) build/nvmx-mb1.iso $(CMDLINE) l1boot=multiboot1 l1args=workload=selftest
	@grub/mkiso.sh $(L1_ELF) $(L1_ISO) $(L1_ARGS)
	@grub/mkiso.sh $(L1_ELF) build/l1-selftest.iso workload=selftest
	@grub/mkiso.sh $(L1_ELF) build/l1-fuzz.iso workload=fuzz seed=1 exits=6000
	@grub/mkiso.sh $(L1_ELF) build/l1-fuzz-seed107.iso workload=fuzz seed=107 exits=19000
	@grub/mkiso.sh $(L1_ELF) build/l1-platform.iso workload=platform
	@grub/mkiso.sh $(L1_ELF) build/l1-pio.iso workload=pio
	@grub/mkiso.sh $(L1_ELF) build/l1-race.iso workload=race exits=$(RACE_ROUNDS)
	@grub/mkiso.sh $(KERNEL_ELF) build/nvmx-race.iso $(CMDLINE) l1vcpus=2 l1args0=workload=echo
	@L1_MODULE=$(KERNEL_ELF) L1_MODULE_ARGS="$(TURTLES_INNER)" L1_MODULE_1=$(L1_ELF) \
	  L1_MODULE_1_ARGS="$(TURTLES_L2_ARGS)" grub/mkiso.sh $(KERNEL_ELF) $(TURTLES_ISO) $(TURTLES_CMDLINE)

# --- run --------------------------------------------------------------------
run: iso
	@if [ -r /dev/kvm ] && grep -qw vmx /proc/cpuinfo; then \
	  echo "VT-x and /dev/kvm found: QEMU+KVM -cpu host, $(CPUS) cores"; \
	  qemu-system-x86_64 -enable-kvm -cpu host -cdrom $(ISO) -serial stdio -smp $(CPUS) \
	    -m $(MEM) -no-reboot -display none && echo "QEMU has stopped: the machine powered off"; \
	else \
	  echo "no VT-x here (no /dev/kvm with VMX): Bochs emulates it"; \
	  $(MAKE) --no-print-directory run-bochs-only; \
	fi

run-qemu: iso
	qemu-system-x86_64 -cdrom $(ISO) -serial stdio -display none -smp $(CPUS) -m $(MEM) -no-reboot

run-qemu-uefi: iso
	qemu-system-x86_64 -bios $(OVMF) -cdrom $(ISO) -serial stdio -display none -smp $(CPUS) \
	  -m $(MEM) -no-reboot

run-bochs: iso run-bochs-only

# nvmx as its own L1 on Bochs MODEL, one core, 512 MiB: `attach 0` reaches
# the inner nvmx's shell (Ctrl-] comes back).
turtles: iso
	@$(MAKE) --no-print-directory run-bochs-only ISO=$(TURTLES_ISO) CPUS=1 MEM=512

# The terminal shows GRUB and nvmx only: COM1 is this terminal (`mode=term`),
# Bochs' own chatter (plugin loading, its debugger's `Next at t=0` and
# register lines on power-off) goes to $(RUN_DIR)/bochs-run.log, its log to
# $(RUN_DIR)/bochs.log. The debugger reads `c` from the rc file and nothing
# from the terminal (stdin is /dev/null).
run-bochs-only:
	@mkdir -p $(RUN_DIR)
	@tty=$$(tty) || { echo "make run-bochs: needs a terminal for the serial line (stdin is not one)"; exit 1; }; \
	tools/bochsrc.sh $(ISO) $(MODEL) $(CPUS) $(MEM) "mode=term, dev=$$tty" $(RUN_DIR)/bochs.log > $(RUN_DIR)/bochsrc
	@echo c > $(RUN_DIR)/bochs-cont.rc
	@echo "Bochs $(MODEL), $(CPUS) cores; screen on VNC :5900; Bochs' own messages in $(RUN_DIR)/bochs-run.log"
	@# Bochs exits with status 1 when the machine powers itself off (poweroff).
	@bochs -q -f $(RUN_DIR)/bochsrc -rc $(RUN_DIR)/bochs-cont.rc </dev/null >$(RUN_DIR)/bochs-run.log 2>&1; status=$$?; \
	if [ $$status -le 1 ]; then echo "Bochs has stopped: the machine powered off"; \
	else stty sane 2>/dev/null; echo "Bochs failed (exit status $$status): see $(RUN_DIR)/bochs-run.log and $(RUN_DIR)/bochs.log"; exit $$status; fi

# --- tests ------------------------------------------------------------------
test: test-host test-system

test-host: toolchain
	$(CARGO) test

test-system: iso linux
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) test -p nvmx-tests -- --test-threads=2

SEED ?= 1
OPS  ?= 6000
SHOW ?=
FUZZ_ARGS = workload=fuzz seed=$(SEED) exits=$(OPS)$(if $(SHOW), show=$(SHOW))
fuzz: iso
	grub/mkiso.sh $(L1_ELF) build/l1-fuzz-run.iso $(FUZZ_ARGS)
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin fuzz -- "$(FUZZ_ARGS)" $(MODEL)

# make fuzz-long: seeds × operations × models, resumable (build/fuzz-long/state.txt);
# not part of make test. Delete the state file to start over.
SEEDS  ?= 1-200
FUZZ_LONG_OPS ?= 100000
MODELS ?= corei7_haswell_4770,corei7_ivy_bridge_3770k
fuzz-long: iso
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin fuzz_long -- $(CURDIR)/$(L1_ELF) $(SEEDS) $(FUZZ_LONG_OPS) $(MODELS)

# The committed record's totals over every session: runs, operations
# identical, divergences fixed / explained / open.
fuzz-record:
	$(CARGO) run -q -p nvmx-tests --bin fuzz_long -- --record

BENCH_EXITS ?= 4000
BENCH_PAIR  ?= 1000
bench: iso
	grub/mkiso.sh $(L1_ELF) build/l1-bench.iso workload=forum exits=$(BENCH_EXITS) time
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin bench -- $(BENCH_EXITS) $(CPUS) $(BENCH_PAIR)

# The seed thread's table with Debian's KVM as L1 (issue 11): shadowing off,
# Issue 13: L0's port-I/O path per device, the built-in L1's workload=pio
# bare and nested on Bochs haswell at BENCH_PIO_IPS (Linux's PIT-only TSC
# calibration runs in it); ~2 min; CSV in build/bench-pio.csv.
BENCH_PIO_IPS ?= 200000000
bench-pio: iso
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin bench_pio -- $(BENCH_PIO_IPS)

# Issue 13 item 4: bench's figures per L3 exit for nvmx as its own L1
# (build/turtles.iso), outer/inner shadowing on/on, on/off, off/on, against
# the forum L1 bare; ~8 min; CSV in build/bench-turtles.csv.
BENCH_TURTLES_WINDOW ?= 20
bench-turtles: iso
	grub/mkiso.sh $(L1_ELF) build/l1-bench.iso workload=forum exits=$(BENCH_EXITS) time
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin bench_turtles -- $(BENCH_TURTLES_WINDOW) $(BENCH_PAIR)

# fixed set, adaptive, full; ~15 min of Bochs; CSV in build/bench-linux.csv.
bench-linux: iso linux
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin bench_linux

include linux/linux.mk

# Charts of the seed thread's counters (tools/plot.py, matplotlib): the
# VMX-instruction exits per reason with shadowing off vs on from `make bench`,
# and a `stats --csv` dump per core and level.
BENCH_CSV ?= build/bench.csv
STATS_CSV ?= build/stats.csv
PLOT_DIR  ?= build
plot: deps
	@$(PLOT_PYTHON) tools/plot.py --bench $(BENCH_CSV) --stats $(STATS_CSV) --out $(PLOT_DIR)

clean:
	$(CARGO) clean
	rm -rf build
