#!/usr/bin/env bash
# Fetches Debian's Linux (cloud flavour) and busybox, and builds what the
# Linux-as-L1 runs boot: build/linux/vmlinuz and build/linux/initrd.img
# (busybox-static, irqbypass/kvm/kvm-intel modules with their signatures
# stripped, kvmtest, linux/init).
#   build.sh <debian-version-of-linux-image-cloud-amd64> <out-dir>
# Nothing here is committed as a binary: the packages come from the archive
# through apt-get download and are unpacked with dpkg-deb -x.
set -euo pipefail
version=$1; out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/deb"

# The pinned version names an ABI (linux-image-6.1.0-NN-cloud-amd64): the
# metapackage of that version depends on it. Old versions leave the archive
# after security updates, so a missing pin is a clear error, not a guess.
meta_depends() { apt-cache show "linux-image-cloud-amd64=$version" 2>/dev/null | sed -n 's/^Depends: //p' | head -1; }
dep=$(meta_depends)
if [ -z "$dep" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    dep=$(meta_depends)
fi
if [ -z "$dep" ]; then
    echo "linux: Debian's archive has no linux-image-cloud-amd64 $version (the pin LINUX_VERSION in linux/linux.mk)." >&2
    echo "linux: versions it has now: $(apt-cache madison linux-image-cloud-amd64 | awk '{print $3}' | tr '\n' ' ')" >&2
    echo "linux: set LINUX_VERSION to one of them (bookworm's cloud kernel, 6.1.x)." >&2
    exit 1
fi
abi=$(echo "$dep" | sed -n 's/^\(linux-image-[^ ]*-cloud-amd64\) .*/\1/p')
release=${abi#linux-image-}
pkg="$abi-unsigned"
echo "linux: $version is $release"

cd "$out/deb"
debfile=$(ls "${pkg}_"*.deb 2>/dev/null | head -1 || true)
if [ -z "$debfile" ]; then
    apt-get download "$pkg=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    debfile=$(ls "${pkg}_"*.deb 2>/dev/null | head -1 || true)
    [ -n "$debfile" ] || { echo "linux: apt-get download $pkg=$version failed" >&2; exit 1; }
fi
bbfile=$(ls busybox-static_*.deb 2>/dev/null | head -1 || true)
if [ -z "$bbfile" ]; then
    apt-get download busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
    bbfile=$(ls busybox-static_*.deb 2>/dev/null | head -1 || true)
    [ -n "$bbfile" ] || { echo "linux: apt-get download busybox-static failed" >&2; exit 1; }
fi
cd - >/dev/null

x=$out/x
rm -rf "$x" && mkdir -p "$x"
dpkg-deb -x "$out/deb/$debfile" "$x/kernel"
dpkg-deb -x "$out/deb/$bbfile" "$x/busybox"
cp "$x/kernel/boot/vmlinuz-$release" "$out/vmlinuz"

root=$x/root
mkdir -p "$root/bin" "$root/lib/modules" "$root/proc" "$root/sys" "$root/dev" "$root/tmp"
cp "$x/busybox/bin/busybox" "$root/bin/busybox"
cp "$here/init" "$root/init"
cp "$out/kvmtest" "$root/bin/kvmtest"
moddir=$x/kernel/lib/modules/$release/kernel
for m in virt/lib/irqbypass arch/x86/kvm/kvm arch/x86/kvm/kvm-intel; do
    # strip --strip-debug rewrites the ELF without the appended signature:
    # checking it costs ~100 s of guest time in Bochs and is not enforced.
    strip --strip-debug -o "$root/lib/modules/$(basename $m).ko" "$moddir/$m.ko"
    if tail -c 28 "$root/lib/modules/$(basename $m).ko" | grep -q 'Module signature appended'; then
        echo "linux: $m.ko still carries its signature" >&2; exit 1
    fi
done
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$out/initrd.img"
echo "$release" > "$out/release"
echo "$version" > "$out/version"
rm -rf "$x"
echo "linux: wrote $out/vmlinuz ($release) and $out/initrd.img ($(du -k "$out/initrd.img" | cut -f1) KiB)"
