#!/usr/bin/env bash
# Usage: scripts/conformance.sh [berth|runc|crun|all] [HARNESS OPTIONS...]
#
# Runs Berth's conformance suite (crates/berth-conformance) against berth, runc and/or crun
# and prints one table per runtime, then one summary line per runtime. Options after the
# runtime go to the harness, e.g. `all --negative`, `runc --filter hooks`, `berth --keep`.
#
# Builds what it needs: the harness and berth (debug) and the static in-container checker
# (release, +crt-static, like scripts/build-release.sh). Honours CARGO_TARGET_DIR; BERTH,
# RUNC and CRUN override the runtime paths (default: the workspace's debug berth,
# /usr/sbin/runc, /usr/bin/crun).
#
# crun 1.8.1 refuses hybrid cgroups (v1 controllers plus a cgroup2 mount at
# /sys/fs/cgroup/unified). To compare like with like, every runtime runs in a private mount
# namespace where that cgroup2 mount is unmounted: all three see the same cgroup v1 host.
# The host's own mounts are not touched. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
[ $# -gt 0 ] && shift
case $which in
    berth | runc | crun) runtimes=("$which") ;;
    all) runtimes=(berth runc crun) ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [berth|runc|crun|all] [HARNESS OPTIONS...]" >&2
        exit 2
        ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "$0: the runtimes create namespaces, mounts and cgroups: run as root" >&2
    exit 1
fi
for tool in cargo unshare mountpoint; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 1; }
done

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
triple="$(uname -m)-unknown-linux-gnu"
echo "== building the harness, berth and the static berth-check" >&2
cargo build -p berth-conformance --bin berth-conformance -p berth --bin berth >&2
# --target keeps +crt-static off build scripts and proc macros, which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release -p berth-conformance --bin berth-check --target "$triple" >&2
harness=$target_dir/debug/berth-conformance
checker=$target_dir/$triple/release/berth-check

runtime_path() {
    case $1 in
        berth) echo "${BERTH:-$target_dir/debug/berth}" ;;
        runc) echo "${RUNC:-/usr/sbin/runc}" ;;
        crun) echo "${CRUN:-/usr/bin/crun}" ;;
    esac
}

summaries=()
status=0
for rt in "${runtimes[@]}"; do
    path=$(runtime_path "$rt")
    if [ ! -x "$path" ]; then
        echo "$0: $rt not found at $path" >&2
        summaries+=("summary: $rt: not run: $path not found")
        status=1
        continue
    fi
    echo >&2
    echo "== $rt ($path)" >&2
    out=$(mktemp)
    if ! unshare --mount --propagation private sh -c '
            if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified; fi
            exec "$@"' sh "$harness" --runtime "$path" --checker "$checker" "$@" | tee "$out"; then
        status=1
    fi
    line=$(grep -E '^summary|"summary"' "$out" | tail -n 1 || true)
    summaries+=("${line:-summary: $rt: the harness printed no summary}")
    rm -f "$out"
done
echo
echo "== summaries"
printf '%s\n' "${summaries[@]}"
exit "$status"
