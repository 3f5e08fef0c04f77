#!/usr/bin/env bash
# A GRUB ISO that boots Linux directly (the bare reference, no nvmx):
#   mkiso.sh <vmlinuz> <initrd> <out.iso> [kernel command line...]
# BIOS only (El Torito): Bochs has no UEFI.
set -euo pipefail
kernel=$1; initrd=$2; out=$3; shift 3
cmdline=${*:-}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/boot/grub"
cp "$kernel" "$stage/boot/vmlinuz"
cp "$initrd" "$stage/boot/initrd.img"
cat > "$stage/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry "linux" {
    linux /boot/vmlinuz $cmdline
    initrd /boot/initrd.img
    boot
}
CFG
grub-mkrescue -o "$out" --install-modules="linux normal iso9660 configfile serial terminal test echo" \
    --fonts= --locales= --themes= "$stage" 2>"$stage.log" || { cat "$stage.log" >&2; exit 1; }
rm -f "$stage.log"
echo "mkiso: wrote $out"
