#!/usr/bin/env bash
# Assembles a BIOS+UEFI hybrid GRUB ISO: mkiso.sh <kernel-elf> <out.iso> [cmdline...]
# With L1_MODULE=<elf> (and L1_MODULE_ARGS) in the environment, that ELF goes
# in as /boot/l1 on a module2 line: nvmx loads it as the L1 instead of its own.
# Only the modules the boot needs are installed and fonts/locales/themes are
# left out: a ~5 MB ISO that boots quickly in Bochs.
set -euo pipefail
kernel=$1; out=$2; shift 2
cmdline=${*:-}
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/boot/grub"
cp "$kernel" "$stage/boot/nvmx"
# The BIOS copy: the Multiboot2 framebuffer tag (type 5, optional, size 20,
# 0x0 at 32 bpp) becomes an unknown optional tag that GRUB ignores. A kernel
# without that tag (the built-in L1) is copied as it is.
python3 - "$kernel" "$stage/boot/nvmx-text" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
tag = struct.pack("<HHIIII", 5, 1, 20, 0, 0, 32)
at = data.find(tag)
if 0 <= at < 32768:
    data[at:at + 2] = struct.pack("<H", 0x8005)
open(sys.argv[2], "wb").write(data)
PY
module=""
if [ -n "${L1_MODULE:-}" ]; then
    cp "$L1_MODULE" "$stage/boot/l1"
    module="module2 /boot/l1 ${L1_MODULE_ARGS:-}"
    # L1_MODULE_1=<file> (and L1_MODULE_1_ARGS): one module of the L1's own
    # (its Multiboot module, Linux's initrd), after the L1 image.
    if [ -n "${L1_MODULE_1:-}" ]; then
        cp "$L1_MODULE_1" "$stage/boot/l1-module-1"
        module="$module\n        module2 /boot/l1-module-1 ${L1_MODULE_1_ARGS:-}"
    fi
fi
sed -e "s|@CMDLINE@|${cmdline//|/\\|}|" -e "s|@MODULE@|${module//|/\\|}|" "$here/grub.cfg" > "$stage/boot/grub/grub.cfg"
for k in nvmx nvmx-text; do
    grub-file --is-x86-multiboot2 "$stage/boot/$k" || { echo "mkiso: $k is not a Multiboot2 kernel" >&2; exit 1; }
done
grub-mkrescue -o "$out" \
    --install-modules="multiboot2 normal iso9660 configfile serial terminal test echo all_video" \
    --fonts= --locales= --themes= \
    "$stage" 2>"$stage.log" || { cat "$stage.log" >&2; exit 1; }
rm -f "$stage.log"
echo "mkiso: wrote $out"
