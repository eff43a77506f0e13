#!/usr/bin/env bash
# Pull benchmark: the same multi-layer image (>= 150 MB, several layers, real files) pulled
# and unpacked from a registry on 127.0.0.1 by berthctl, containerd (`ctr images pull`,
# which unpacks into its overlayfs snapshotter) and podman, in one run; then the time of a
# cold `run --rm IMAGE true` for berthctl beside podman.
#
# Each pull starts from an empty store (berthctl and podman: a fresh --root; containerd: a
# fresh daemon with its own root), so every layer is fetched, verified and unpacked.
# Reports the median of RUNS pulls per tool and the ratio to containerd. Not a test:
# nothing is asserted. See docs/benchmark.md.
#
# Environment (all optional):
#   BERTHCTL  berthctl binary  (default: the release build from scripts/build-release.sh)
#   RUNS      pulls per tool   (default: 3)
#   RUN_RUNS  timed runs of `run --rm IMAGE true` per tool (default: 20)
#   OUT       results directory (default: target/bench/pull-<timestamp>)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/pull.sh: needs root" >&2; exit 1; }
for t in docker-registry skopeo umoci ctr containerd podman hyperfine; do
  command -v "$t" >/dev/null || { echo "bench/pull.sh: $t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
RUNS=${RUNS:-3}
RUN_RUNS=${RUN_RUNS:-20}
OUT=${OUT:-$repo/target/bench/pull-$(date +%Y%m%d-%H%M%S)}
BERTHCTL=${BERTHCTL:-$(bash "$repo/scripts/build-release.sh" berthctl)}
mkdir -p "$OUT"
work=$(mktemp -d /var/tmp/berth-pull-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  unmount_under "$work"
  rm -rf "$work"
}
trap cleanup EXIT

# --- a registry on a free port -------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
ref="127.0.0.1:$port/bench/big:1"

# --- the image: six layers of real files, ~190 MB uncompressed -------------------------
layout="$work/layout"
umoci init --layout "$layout" >/dev/null
umoci new --image "$layout:1" >/dev/null
unpacked=0
add() { # src dest
  unpacked=$((unpacked + $(du -sb "$1" | cut -f1)))
  mkdir -p "$work/stage"; rm -rf "$work/stage"/*; mkdir -p "$work/stage/$(dirname "$2")"
  cp -a "$1" "$work/stage/$2"
  umoci insert --image "$layout:1" "$work/stage/$2" "$2" >/dev/null
}
mkdir -p "$work/bin"
cp /bin/busybox "$work/bin/busybox"
for a in sh true; do ln -s busybox "$work/bin/$a"; done
add "$work/bin" /bin
add /usr/lib/x86_64-linux-gnu/perl-base /usr/lib/perl-base
add /usr/share/locale /usr/share/locale
add /usr/lib/python3.11 /usr/lib/python3.11
add /usr/share/doc /usr/share/doc
add /usr/lib/x86_64-linux-gnu/gconv /usr/lib/gconv
umoci config --image "$layout:1" --config.cmd /bin/busybox --config.cmd true >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$layout:1" "docker://$ref"
size=$(du -sb "$work/registry" | cut -f1)
layers=$(find "$work/registry" -path '*blobs/sha256/*/data' | wc -l)
echo "image: $ref, $layers blobs, $((size / 1000000)) MB compressed in the registry, $((unpacked / 1000000)) MB of files"

cat > "$work/registries.toml" <<TOML
[[registry]]
prefix = "127.0.0.1:$port"
insecure = true
TOML

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
now() { date +%s.%N; }

# Each tool's pull is a function of the round number; rounds interleave the tools so
# that a slow moment of the machine does not fall on one of them only. `sync` first, so
# that no tool pays for the writeback of the one before. Nothing is deleted until the end:
# removing a 345 MB tree leaves the filesystem busy for seconds (measured: the pull right
# after one took twice as long), which would fall on whichever tool came next.
unmount_under() { grep -o " $1[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true; }
timed() { # file command...
  sync
  local t0 t1
  t0=$(now)
  "${@:2}" >/dev/null
  t1=$(now)
  echo "$t1 - $t0" | bc >>"$OUT/$1.times"
}

pull_berthctl() {
  local r="$work/berth-$1"
  timed berthctl "$BERTHCTL" --root "$r" --runroot "$work/berth-run" --registries-conf "$work/registries.toml" pull -q "$ref"
}

pull_containerd() {
  local c="$work/containerd-$1" cpid
  mkdir -p "$c"
  cat > "$c/config.toml" <<CFG
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$c/sock"
CFG
  containerd --config "$c/config.toml" >"$c/log" 2>&1 &
  cpid=$!
  for _ in $(seq 100); do ctr --address "$c/sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  timed containerd ctr --address "$c/sock" -n bench images pull --plain-http "$ref"
  kill "$cpid"; wait "$cpid" 2>/dev/null || true
  unmount_under "$c"
}

pull_podman() {
  local p="$work/podman-$1"
  timed podman podman --root "$p/root" --runroot "$p/run" --storage-driver overlay pull -q --tls-verify=false "$ref"
}

for i in $(seq "$RUNS"); do
  pull_berthctl "$i"
  pull_containerd "$i"
  pull_podman "$i"
  echo "round $i: berthctl $(tail -1 "$OUT/berthctl.times") s, containerd $(tail -1 "$OUT/containerd.times") s, podman $(tail -1 "$OUT/podman.times") s"
done
berth_root="$work/berth-$RUNS"
podman_root="$work/podman-$RUNS"

b=$(median <"$OUT/berthctl.times"); c=$(median <"$OUT/containerd.times"); p=$(median <"$OUT/podman.times")

# --- cold run of the pulled image ------------------------------------------------------
hyperfine -N --warmup 2 --runs "$RUN_RUNS" --export-json "$OUT/run.json" \
  -n berthctl "$BERTHCTL --root $berth_root --runroot $work/berth-run run --rm $ref true" \
  -n podman "podman --root $podman_root/root --runroot $podman_root/run --storage-driver overlay --runtime runc run --rm --network none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 $ref true" \
  >"$OUT/run.txt" 2>&1 || { cat "$OUT/run.txt" >&2; exit 1; }
runs=$(python3 - "$OUT/run.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] * 1000 for x in json.load(open(sys.argv[1]))["results"]}
print(f'{r.get("berthctl", 0):.1f} {r.get("podman", 0):.1f}')
PY
)
read -r rb rp <<<"$runs"

{
  echo "| | berthctl | containerd (ctr) | podman |"
  echo "|---|---|---|---|"
  printf '| pull + unpack, median of %s (s) | %.2f | %.2f | %.2f |\n' "$RUNS" "$b" "$c" "$p"
  printf '| speed-up of berthctl | | %.2fx | %.2fx |\n' "$(echo "$c / $b" | bc -l)" "$(echo "$p / $b" | bc -l)"
  printf '| cold `run --rm IMAGE true`, median (ms) | %.1f | | %.1f |\n' "$rb" "$rp"
  echo
  echo "image: $layers blobs, $((size / 1000000)) MB compressed, $((unpacked / 1000000)) MB of files; results in $OUT"
} | tee "$OUT/summary.md"
