#!/bin/sh
# Usage: tests/support/busybox-rootfs.sh DIR
#
# Fills DIR with a minimal root filesystem made of the host's static busybox:
# /bin/busybox plus one symlink per applet (/bin/sh, /bin/true, ...), the
# usual mount points and a root-only /etc/passwd and /etc/group.
#
# BERTH_TEST_BUSYBOX overrides the busybox binary (default /bin/busybox, from
# Debian's busybox-static). A dynamically linked busybox will not run inside
# the container, so this refuses one.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
busybox=${BERTH_TEST_BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
    echo "$0: $busybox not found (install busybox-static or set BERTH_TEST_BUSYBOX)" >&2
    exit 1
fi
# A static ELF has no program interpreter (PT_INTERP / .interp section).
if command -v readelf >/dev/null 2>&1 && readelf -l "$busybox" 2>/dev/null | grep -q 'program interpreter'; then
    echo "$0: $busybox is dynamically linked; a static busybox is needed (busybox-static)" >&2
    exit 1
fi

mkdir -p "$dir/bin" "$dir/dev" "$dir/proc" "$dir/sys" "$dir/etc" "$dir/tmp" "$dir/run"
chmod 1777 "$dir/tmp"
cp "$busybox" "$dir/bin/busybox"
for applet in $("$busybox" --list); do
    case $applet in
        busybox | */*) continue ;;
    esac
    ln -sf busybox "$dir/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\n' >"$dir/etc/passwd"
printf 'root:x:0:\n' >"$dir/etc/group"
