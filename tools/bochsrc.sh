#!/usr/bin/env bash
# Writes a Bochs configuration for nvmx to stdout.
#   bochsrc.sh ISO MODEL CPUS MEGS COM1-LINE [IPS]
# COM1-LINE is Bochs' com1 option string, e.g. "mode=term, dev=/dev/tty" or
# "mode=socket-client, dev=127.0.0.1:5555". Bochs logs to build/bochs.log. See ../shared/PLATFORM.md for why
# each line is here (fastboot BIOS, clock sync=none, no triple-fault reset).
set -euo pipefail
iso=$1; model=$2; cpus=$3; megs=$4; com1=$5; ips=${6:-4000000}
cat <<RC
cpu: model=$model, count=$cpus, ips=$ips, reset_on_triple_fault=0
megs: $megs
romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot
vgaromimage: file=/usr/share/vgabios/vgabios.bin
ata0-master: type=cdrom, path=$iso, status=inserted
boot: cdrom
clock: sync=none
display_library: rfb, options="timeout=0"
com1: enabled=1, $com1
error: action=report
log: build/bochs.log
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
RC
