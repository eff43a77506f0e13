#!/usr/bin/env bash
# Berth benchmark: berth, runc and crun side by side on the same busybox bundle.
#
#   (a) run     `RUNTIME run` of /bin/true (create + start + wait + delete)
#   (b) cycle   `create`, `start`, `delete --force` as three invocations
#   (c) RSS     peak resident set size of `RUNTIME run`, via GNU time
#
# Reports medians, ratios to crun and peak RSS as a Markdown table. This is a
# benchmark, not a test: nothing is asserted. See docs/benchmark.md.
#
# Environment (all optional):
#   BERTH     berth binary               (default: the static release build,
#                                         made by scripts/build-release.sh)
#   RUNC      runc binary                (default: runc from PATH)
#   CRUN      crun binary                (default: crun from PATH)
#   RUNTIMES  which to compare           (default: "berth runc crun")
#   RUNS      timed runs per command     (default: 100)
#   WARMUP    warm-up runs per command   (default: 10)
#   RSS_RUNS  runs for the RSS figures   (default: 30)
#   OUT       where results are kept     (default: target/bench/<timestamp>)
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)

die() {
    echo "bench.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# ---------------------------------------------------------------------------
# Inner part: runs in a private mount namespace (see the end of this file).
# ---------------------------------------------------------------------------
inside() {
    # crun 1.8 refuses cgroup "hybrid" mode (v1 controllers plus cgroup2 at
    # /sys/fs/cgroup/unified). Hide the unified mount from all three runtimes
    # alike so that they all see the same plain cgroup v1 layout. The mount
    # namespace is private: the host keeps its mount. (-n: no utab entry, so
    # util-linux leaves nothing in the host's /run/mount.)
    if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then
        umount -n /sys/fs/cgroup/unified
    fi
    # State directories on tmpfs, as /run usually is.
    mount -n -t tmpfs -o mode=0700 berth-bench "$WORK/state"

    local -A path
    local rt
    for rt in $RUNTIMES; do
        path[$rt]=$(resolve "$rt")
        mkdir -p "$WORK/state/$rt"
    done
    trap 'cleanup_containers' EXIT

    local bundle=$WORK/bundle
    local cgroup_view
    if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
        cgroup_view="cgroup v2 (unified)"
    else
        cgroup_view="cgroup v1 (unified hierarchy hidden)"
    fi

    {
        echo "# Berth benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        echo "- cgroups as the runtimes see them: $cgroup_view"
        echo "- runs: $RUNS timed after $WARMUP warm-up per command; RSS over $RSS_RUNS runs"
        for rt in $RUNTIMES; do
            echo "- $rt: ${path[$rt]} ($("${path[$rt]}" --version 2>&1 | head -n1))"
        done
    } >"$OUT/header.md"
    cat "$OUT/header.md"
    echo

    # Sanity check: each runtime can run the bundle at all.
    for rt in $RUNTIMES; do
        "$bench_dir/once.sh" run "${path[$rt]}" "$WORK/state/$rt" "$bundle" ||
            die "$rt cannot run the benchmark bundle"
    done

    local -a run_cmds=() cycle_cmds=()
    for rt in $RUNTIMES; do
        run_cmds+=(-n "$rt" "$bench_dir/once.sh run ${path[$rt]} $WORK/state/$rt $bundle")
        cycle_cmds+=(-n "$rt" "$bench_dir/once.sh cycle ${path[$rt]} $WORK/state/$rt $bundle")
    done
    # The wrapper's own cost (sh + exec), to put small differences in context.
    run_cmds+=(-n "wrapper" "$bench_dir/once.sh noop - - -")

    echo "## (a) run /bin/true"
    hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
        --export-csv "$OUT/run.csv" --export-json "$OUT/run.json" "${run_cmds[@]}"
    echo
    echo "## (b) create / start / delete"
    hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
        --export-csv "$OUT/cycle.csv" --export-json "$OUT/cycle.json" "${cycle_cmds[@]}"
    echo

    # Peak RSS: GNU time reports the largest maximum RSS among the runtime
    # process and the children it waited for (runc's `runc init`, crun's
    # container process before it execs /bin/true...).
    echo "## (c) peak RSS of run (KiB)"
    local i
    for rt in $RUNTIMES; do
        : >"$OUT/rss-$rt.txt"
        for i in $(seq "$RSS_RUNS"); do
            /usr/bin/time -f %M -o "$WORK/rss.tmp" \
                "${path[$rt]}" --root "$WORK/state/$rt" run --bundle "$bundle" "rss-$i-$$" >/dev/null
            tail -n1 "$WORK/rss.tmp" >>"$OUT/rss-$rt.txt"
        done
    done

    report >"$OUT/table.md"
    echo
    cat "$OUT/table.md"
    echo
    echo "results kept in $OUT"
}

# Median (column 4 of hyperfine's CSV, seconds) of command $2 in CSV $1.
median_of() {
    awk -F, -v name="$2" 'NR > 1 && $1 == name { print $4 }' "$1"
}

# Median / max of a file with one number per line.
stat_of() {
    sort -n "$1" | awk -v what="$2" '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "n/a"; exit }
            if (what == "max") print v[NR]
            else if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

ms() { awk -v s="$1" 'BEGIN { if (s == "") print "n/a"; else printf "%.2f", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2fx", a / b }'; }

report() {
    local crun_run crun_cycle rt run cycle
    crun_run=$(median_of "$OUT/run.csv" crun)
    crun_cycle=$(median_of "$OUT/cycle.csv" crun)
    echo "| runtime | run median (ms) | run vs crun | create/start/delete median (ms) | cycle vs crun | peak RSS of run, median / max (KiB) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for rt in $RUNTIMES; do
        run=$(median_of "$OUT/run.csv" "$rt")
        cycle=$(median_of "$OUT/cycle.csv" "$rt")
        echo "| $rt | $(ms "$run") | $(ratio "$run" "$crun_run") | $(ms "$cycle") | $(ratio "$cycle" "$crun_cycle") |" \
            "$(stat_of "$OUT/rss-$rt.txt" median) / $(stat_of "$OUT/rss-$rt.txt" max) |"
    done
    echo
    echo "Wrapper overhead included in every timed command (sh + exec of /bin/true): $(ms "$(median_of "$OUT/run.csv" wrapper)") ms median."
}

# Deletes whatever a failed run left behind in the runtimes' state dirs.
cleanup_containers() {
    local rt p id
    for rt in $RUNTIMES; do
        p=$(resolve "$rt") || continue
        [ -d "$WORK/state/$rt" ] || continue
        for id in $("$p" --root "$WORK/state/$rt" list -q 2>/dev/null); do
            "$p" --root "$WORK/state/$rt" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
}

# Absolute path of a runtime by name.
resolve() {
    local want p
    case $1 in
        berth) want=$BERTH ;;
        runc) want=$RUNC ;;
        crun) want=$CRUN ;;
        *) die "unknown runtime $1 (RUNTIMES may name berth, runc, crun)" ;;
    esac
    p=$(command -v "$want") || die "$1: $want not found (set ${1^^}=/path/to/$1)"
    [ -x "$p" ] || die "$1: $p is not executable"
    readlink -f "$p"
}

# ---------------------------------------------------------------------------
# Outer part
# ---------------------------------------------------------------------------
case ${1:-} in
    -h | --help)
        usage
        exit 0
        ;;
    --inside)
        inside
        exit 0
        ;;
    "") ;;
    *)
        usage >&2
        exit 2
        ;;
esac

if [ -z "${BERTH:-}" ]; then
    BERTH=$(bash "$repo/scripts/build-release.sh")
fi
RUNC=${RUNC:-runc}
CRUN=${CRUN:-crun}
RUNTIMES=${RUNTIMES:-berth runc crun}
RUNS=${RUNS:-100}
WARMUP=${WARMUP:-10}
RSS_RUNS=${RSS_RUNS:-30}
OUT=${OUT:-$repo/target/bench/$(date +%Y%m%d-%H%M%S)}

[ "$(id -u)" -eq 0 ] || die "must run as root"
for tool in hyperfine unshare mountpoint; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) not found"
for rt in $RUNTIMES; do
    resolve "$rt" >/dev/null
done

WORK=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" "$WORK/state" "$WORK/bundle"
sh "$repo/tests/support/busybox-rootfs.sh" "$WORK/bundle/rootfs"
# A plain runc-style spec running /bin/true; ociVersion 1.0.2 because crun 1.8 only
# accepts versions containing "1.0".
cp "$bench_dir/config.json" "$WORK/bundle/config.json"

export BERTH RUNC CRUN RUNTIMES RUNS WARMUP RSS_RUNS OUT WORK
unshare --mount --propagation private "${BASH_SOURCE[0]}" --inside
