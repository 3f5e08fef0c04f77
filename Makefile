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
# An external L1 for build/nvmx.iso: any Multiboot2 ELF64 kernel (a hypervisor
# of your own); empty = nvmx's built-in L1.
L1_MODULE      ?=
L1_MODULE_ARGS ?=
OVMF        := /usr/share/ovmf/OVMF.fd
DEB_PKGS    := bochs bochsbios vgabios qemu-system-x86 ovmf grub-pc-bin grub-efi-amd64-bin \
               grub-common xorriso mtools
SUDO        := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all help deps toolchain guest kernel iso bench fuzz fuzz-long run run-qemu run-qemu-uefi run-bochs test test-host \
        test-system clean

all: iso

help:
	@echo "nvmx make targets:"
	@echo "  make / make iso    build the kernel and $(ISO) (BIOS+UEFI GRUB ISO), and the"
	@echo "                     built-in L1 alone as $(L1_ISO) (bare runs, L1_ARGS) and"
	@echo "                     build/l1-selftest.iso (its VMX conformance checks), and"
	@echo "                     build/nvmx-module-l1.iso (nvmx with the L1 as a GRUB module)"
	@echo "  make run           boot with the shell on this terminal: QEMU+KVM -cpu host when"
	@echo "                     /dev/kvm offers VT-x, else Bochs $(MODEL) with CPUS cores"
	@echo "  make run-qemu      QEMU (TCG, no VT-x) BIOS, -serial stdio"
	@echo "  make run-qemu-uefi QEMU with OVMF (UEFI), -serial stdio"
	@echo "  make run-bochs     Bochs MODEL=... CPUS=..., serial on this terminal"
	@echo "  make test          host unit tests + system tests (QEMU and Bochs)"
	@echo "  make test-host     host unit tests only (cargo test)"
	@echo "  make bench         Bochs haswell: forum workload, VMCS shadowing off vs on (BENCH_EXITS, CPUS)"
	@echo "  make fuzz          the differential VMX fuzzer: the L1's workload=fuzz bare on Bochs"
	@echo "                     MODEL and nested under nvmx, compared (SEED, OPS, SHOW=<op>)"
	@echo "  make fuzz-long     the fuzzer for hours: SEEDS=1-200 x FUZZ_LONG_OPS=100000 x MODELS=a,b;"
	@echo "                     resumable (build/fuzz-long/state.txt), summary and verdict; not in make test"
	@echo "  make deps          install the Debian packages and the pinned toolchain"
	@echo "  make clean"
	@echo "variables:"
	@echo "  PROFILE=$(PROFILE)  (release|dev)   CPUS=$(CPUS)   MEM=$(MEM) (MiB)"
	@echo "  MODEL=$(MODEL)  (Bochs: corei7_ivy_bridge_3770k has no VMCS shadowing)"
	@echo "  CMDLINE='$(CMDLINE)'  (nvmx command line: log=…, l1mem=<MiB>, l1args=a,b,…)"
	@echo "  L1_ARGS='$(L1_ARGS)'  (command line of the bare L1 ISO)"
	@echo "  L1_MODULE=<elf> L1_MODULE_ARGS='…'  (run that Multiboot2 kernel as every core's L1"
	@echo "                     instead of the built-in one; build/nvmx-module-l1.iso is the test copy)"

# --- installation -----------------------------------------------------------
deps: toolchain
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

toolchain:
	@rustup run $(TOOLCHAIN) rustc --version >/dev/null 2>&1 && \
	  rustup component list --toolchain $(TOOLCHAIN) --installed | grep -q rust-src || \
	  rustup toolchain install $(TOOLCHAIN) --profile minimal --component rust-src

# --- build ------------------------------------------------------------------
# The built-in L1 (guest/) is built first: the kernel embeds it.
guest: toolchain
	$(CARGO) build -p nvmx-guest --target $(TARGET_JSON) $(BUILD_STD) --profile $(PROFILE)

kernel: guest
	NVMX_L1_ELF=$(CURDIR)/$(L1_ELF) $(CARGO) build -p nvmx-kernel --target $(TARGET_JSON) $(BUILD_STD) \
	  --profile $(PROFILE)

iso: deps kernel
	@mkdir -p build
	L1_MODULE="$(L1_MODULE)" L1_MODULE_ARGS="$(L1_MODULE_ARGS)" grub/mkiso.sh $(KERNEL_ELF) $(ISO) $(CMDLINE)
	L1_MODULE=$(L1_ELF) L1_MODULE_ARGS="workload=selftest" grub/mkiso.sh $(KERNEL_ELF) build/nvmx-module-l1.iso $(CMDLINE)
	grub/mkiso.sh $(L1_ELF) $(L1_ISO) $(L1_ARGS)
	grub/mkiso.sh $(L1_ELF) build/l1-selftest.iso workload=selftest
	grub/mkiso.sh $(L1_ELF) build/l1-fuzz.iso workload=fuzz seed=1 exits=6000

# --- run --------------------------------------------------------------------
run: iso
	@if [ -r /dev/kvm ] && grep -qw vmx /proc/cpuinfo; then \
	  echo "VT-x and /dev/kvm found: QEMU+KVM -cpu host, $(CPUS) cores"; \
	  qemu-system-x86_64 -enable-kvm -cpu host -cdrom $(ISO) -serial stdio -smp $(CPUS) \
	    -m $(MEM) -no-reboot -display none; \
	else \
	  echo "no VT-x here: Bochs $(MODEL), $(CPUS) cores (screen on VNC :5900)"; \
	  $(MAKE) --no-print-directory run-bochs-only; \
	fi

run-qemu: iso
	qemu-system-x86_64 -cdrom $(ISO) -serial stdio -display none -smp $(CPUS) -m $(MEM) -no-reboot

run-qemu-uefi: iso
	qemu-system-x86_64 -bios $(OVMF) -cdrom $(ISO) -serial stdio -display none -smp $(CPUS) \
	  -m $(MEM) -no-reboot

run-bochs: iso run-bochs-only

run-bochs-only:
	@mkdir -p build
	tools/bochsrc.sh $(ISO) $(MODEL) $(CPUS) $(MEM) "mode=term, dev=$$(tty)" > build/bochsrc
	@echo c > build/bochs-cont.rc
	@# Bochs exits with status 1 when the machine powers itself off (poweroff).
	bochs -q -f build/bochsrc -rc build/bochs-cont.rc; status=$$?; [ $$status -le 1 ] || exit $$status

# --- tests ------------------------------------------------------------------
test: test-host test-system

test-host: toolchain
	$(CARGO) test

test-system: iso
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

BENCH_EXITS ?= 4000
bench: iso
	NVMX_ISO=$(CURDIR)/$(ISO) $(CARGO) run -q -p nvmx-tests --bin bench -- $(BENCH_EXITS) $(CPUS)

clean:
	$(CARGO) clean
	rm -rf build
