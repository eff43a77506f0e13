#!/usr/bin/env bash
# VM isolation's cost, in one run (docs/vm.md, docs/benchmark.md):
#
#   (a) start  wall clock from the command to its first output, and to its exit, of
#              - `berthctl run --rm --isolation vm berth-busybox echo hi` (VM mode: boot, agent,
#                container, output, then power-off),
#              - plain QEMU booting the same kernel with the same settings to a trivial busybox
#                /init that prints a line and powers off (crates/berth-microvm/examples/
#                plainboot.rs, timed from the backend's setup to the line on the console):
#                the floor VM mode is measured against,
#              - `berthctl run --rm berth-busybox echo hi` (process mode),
#              RUNS times each, interleaved, after one warm-up run each (which makes the
#              cached initramfs and layer disk). Berth's overhead = VM mode's first output /
#              plain QEMU's init line - 1.
#   (b) memory of one idle VM container (`sleep`): the VMM's RSS and PSS, berthctl's PSS
#              (it is the VM's monitor in the foreground) and the guest memory it was given.
#
# The accelerator is whatever berth-vm's probe picks (TCG on a host whose /dev/kvm is PVM);
# it is printed with the results. Nothing is asserted. Needs root, the guest kernel
# (scripts/vm-kernel.sh) and the packages of scripts/install-deps.sh.
#
# Environment (all optional):
#   RUNS   timed runs of each command                         (default: 10)
#   BUILD  1: release builds first (berthctl, plainboot, agent), 0: use what is there (default: 1)
#   CARGO_TARGET_DIR                                           as cargo reads it
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
RUNS=${RUNS:-10}
BUILD=${BUILD:-1}
target=${CARGO_TARGET_DIR:-$repo/target}
[ "$(id -u)" = 0 ] || { echo "vm.sh: needs root" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
  cargo build --release --quiet -p berthctl
  cargo build --release --quiet -p berth-microvm --example plainboot
fi
agent_dest="$target/agent-static/berth-agent"
DEST="$agent_dest" bash scripts/build-agent.sh >/dev/null
export BERTH_AGENT="$agent_dest"
bin="$target/release"

work=$(mktemp -d /tmp/bvm-bench.XXXXXX)
cleanup() {
  pkill -KILL -f "qemu-system.*$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ctl=("$bin/berthctl" --root "$work/root" --runroot "$work/run")

# command... -> "seconds-to-first-stdout-byte seconds-to-exit"
timed() {
  python3 - "$@" <<'PY'
import subprocess, sys, time
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
p.stdout.read(1)
first = time.monotonic() - t0
p.stdout.read()
err = p.stderr.read()
if p.wait() != 0:
    sys.exit("vm.sh: failed: %s: %s" % (sys.argv[1:], err.decode(errors="replace")))
print("%.3f %.3f" % (first, time.monotonic() - t0))
PY
}
# median of column $1
median() { awk -v c="$1" '{print $c}' | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

echo "== warm-up (caches the initramfs and the layer disk)" >&2
"${ctl[@]}" run --rm --isolation vm berth-busybox echo hi >/dev/null
"${ctl[@]}" run --rm berth-busybox echo hi >/dev/null
"$bin/examples/plainboot" 512 1 >/dev/null

: >"$work/vm.t"; : >"$work/plain.t"; : >"$work/proc.t"
for i in $(seq 1 "$RUNS"); do
  echo "== run $i/$RUNS" >&2
  timed "${ctl[@]}" run --rm --isolation vm berth-busybox echo hi >>"$work/vm.t"
  "$bin/examples/plainboot" 512 1 >>"$work/plain.t"
  timed "${ctl[@]}" run --rm berth-busybox echo hi >>"$work/proc.t"
done
vm=$(median 1 <"$work/vm.t"); plain=$(median 1 <"$work/plain.t"); proc=$(median 1 <"$work/proc.t")
vm_exit=$(median 2 <"$work/vm.t"); plain_exit=$(median 2 <"$work/plain.t"); proc_exit=$(median 2 <"$work/proc.t")

echo "== idle VM memory" >&2
"${ctl[@]}" run --rm --isolation vm berth-busybox sh -c 'trap "exit 0" TERM; echo ready; sleep 600 & wait' >"$work/idle.out" 2>&1 &
monitor=$!
for _ in $(seq 1 600); do grep -q ready "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
sleep "${SETTLE:-3}"
vmm=$(pgrep -f "qemu-system.*$work" | head -1)
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/smaps_rollup"; }
vmm_rss=$(kib "$vmm" Rss); vmm_pss=$(kib "$vmm" Pss); mon_pss=$(kib "$monitor" Pss)
guest_mib=$(tr '\0' ' ' <"/proc/$vmm/cmdline" | sed -n 's/.* -m \([0-9]*\)M.*/\1/p')
accel=$(tr '\0' ' ' <"/proc/$vmm/cmdline" | sed -n 's/.*-accel \([a-z]*\).*/\1/p')
kill -TERM "$monitor"; wait "$monitor" 2>/dev/null || true

qemu_v=$(qemu-system-x86_64 --version | head -1)
kernel_v=$(sed -n 's/^kernel=//p' "${BERTH_VM_KERNEL_DIR:-/var/cache/berth/vm-kernel}/VERSION")
cat <<EOT

## VM mode (bench/vm.sh, $(date -u +%Y-%m-%d), $RUNS runs, accel $accel)
$qemu_v; guest kernel $kernel_v; $(nproc) host CPUs

| median of $RUNS | first output | exit |
|---|---|---|
| plain QEMU, same kernel and settings, trivial /init | ${plain} s | ${plain_exit} s |
| \`berthctl run --rm --isolation vm berth-busybox echo hi\` | ${vm} s | ${vm_exit} s |
| Berth's overhead over plain QEMU | $(awk -v a="$vm" -v b="$plain" 'BEGIN {printf "%.0f", (a / b - 1) * 100}')% | $(awk -v a="$vm_exit" -v b="$plain_exit" 'BEGIN {printf "%.0f", (a / b - 1) * 100}')% |
| \`berthctl run --rm berth-busybox echo hi\` (process mode) | ${proc} s | ${proc_exit} s |
| VM mode / process mode | $(awk -v a="$vm" -v b="$proc" 'BEGIN {printf "%.0f", a / b}')x | $(awk -v a="$vm_exit" -v b="$proc_exit" 'BEGIN {printf "%.0f", a / b}')x |

| idle VM container (\`sleep\`) | KiB |
|---|---|
| VMM (QEMU) RSS | $vmm_rss |
| VMM (QEMU) PSS | $vmm_pss |
| berthctl (the monitor) PSS | $mon_pss |
| guest memory given | $((guest_mib * 1024)) |
EOT
