#!/usr/bin/env bash
# Pod start and pod memory: berthd (with one berth-shim per pod) against containerd (its CRI
# plugin, runc, one containerd-shim-runc-v2 per pod), in one run, on the same pods:
#
#   (a) start  RunPodSandbox + CreateContainer + StartContainer of a busybox `sleep 3600`,
#              wall clock per pod, PODS pods one after the other (CONCURRENCY at once),
#              through the CRI socket by crates/berthd/examples/podbench.rs
#   (b) memory PSS (/proc/PID/smaps_rollup) of each pod's monitor with all pods idle:
#              berth-shim, containerd-shim-runc-v2, and conmon beside them (PODS
#              `podman run -d` of the same image), plus the monitor with the pod's pause
#
# Offline: the busybox image (from /bin/busybox) and a pause image are built with umoci and
# pushed with skopeo to a docker-registry on 127.0.0.1 that only this run can reach; both
# engines pull through the CRI ImageService. Each engine has its own temporary root, state
# and socket, the same CNI conflist (bridge + host-local), the cgroupfs driver, and runs
# alone. Everything runs in a private mount and network namespace, and is stopped and
# removed at exit. Reports medians, p99, ratios berthd/containerd as a Markdown table. Not
# a test: nothing is asserted. See docs/benchmark.md.
#
# Environment (all optional):
#   PODS         pods timed per engine, and idle pods measured     (default: 50)
#   WARMUP       pods started and removed first, not counted       (default: 3)
#   CONCURRENCY  pods started at once by podbench                  (default: 1)
#   SETTLE       seconds the pods sit idle before memory is read   (default: 5)
#   CONMON       1: measure conmon with podman, 0: skip            (default: 1)
#   BUILD        1: cargo build --release first, 0: use what is there (default: 1)
#   OUT          results directory          (default: <target dir>/bench/pods-<timestamp>)
#   CARGO_TARGET_DIR, CARGO_BUILD_JOBS      as cargo reads them
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_dir/.." && pwd)
self=$bench_dir/$(basename "${BASH_SOURCE[0]}")

die() {
    echo "pods.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

REGISTRY=127.0.0.1:5000 # inside the private network namespace: always free
IMAGE=$REGISTRY/podbench/busybox:1
PAUSE=$REGISTRY/podbench/pause:1
WORKLOAD="sleep 3600"

# ---------------------------------------------------------------------------
# Inner part: runs in a private mount and network namespace (see the end).
# ---------------------------------------------------------------------------
inside() {
    ip link set lo up
    # containerd 1.6 puts its shims' sockets under /run/containerd/s whatever its state
    # directory: a tmpfs there, seen by this namespace only, keeps the host's untouched.
    mount -n -t tmpfs -o mode=0711 podbench /run/containerd
    # The engines' run-time state (berthd's run_dir, containerd's state) on a tmpfs, as
    # /run is, at a short path: berthd's shim sockets are RUN/berthd/pods/<id>/shim.sock,
    # and a unix socket's path must fit in 108 bytes.
    mount -n -t tmpfs -o mode=0711 podbench "$RUN"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$WORK"/{registry,berthd,containerd,podman,logs,net.d} "$RUN"/{berthd,containerd}

    {
        echo "# Pod start and memory, $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(cgroup_layout)"
        echo "- pods: $PODS timed per engine after $WARMUP warm-up, $CONCURRENCY at once; memory after $SETTLE s idle"
        echo "- berthd: $BERTHD ($("$BERTHD" --version 2>&1 | head -n1), source $SOURCE), shim $BERTH_SHIM"
        echo "- containerd: $(containerd --version | head -n1); $(runc --version | head -n1)"
        [ "$CONMON" != 1 ] || echo "- conmon: $(conmon --version | head -n1); $(podman --version)"
        echo "- image: busybox $(/bin/busybox | head -n1 | awk '{print $2}') from /bin/busybox; pause: $PAUSE_KIND"
    } | tee "$OUT/header.md"
    echo

    start_registry
    build_images

    # One network for both: a bridge with host-local addresses (containerd 1.6 fails a pod
    # whose network gives eth0 no address, so loopback alone will not do). Both engines
    # bring up the pod's loopback themselves.
    cat >"$WORK/net.d/10-podbench.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "podbench",
  "plugins": [
    {
      "type": "bridge", "bridge": "podbench0", "isGateway": true, "ipMasq": false,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
               "dataDir": "$WORK/cni-ipam"}
    }
  ]
}
JSON

    phase_berthd
    phase_containerd
    if [ "$CONMON" = 1 ]; then
        phase_podman
    fi

    report | tee "$OUT/table.md"
    echo
    echo "results kept in $OUT"
}

cgroup_layout() {
    if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
        echo "cgroup v2"
    elif mountpoint -q /sys/fs/cgroup/unified; then
        echo "cgroup v1 (hybrid)"
    else
        echo "cgroup v1"
    fi
}

start_registry() {
    cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: $REGISTRY
YML
    # Daemons in sessions of their own: a Ctrl-C must reach this script, which then removes
    # the pods through them, and not stop them first.
    setsid docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
    echo $! >"$WORK/registry.pid"
    local i
    for i in $(seq 100); do
        curl -fs "http://$REGISTRY/v2/" >/dev/null 2>&1 && return
        sleep 0.1
    done
    cat "$WORK/registry.log" >&2
    die "docker-registry did not answer on $REGISTRY"
}

# The workload image (busybox and its applets `sh` and `sleep`) and a pause image (a static
# pause as the kubelet's, built from C when a compiler is there; else busybox sleep).
build_images() {
    local layout=$WORK/layout stage=$WORK/stage
    mkdir -p "$stage/bin" "$stage/pause"
    cp /bin/busybox "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"
    ln -s busybox "$stage/bin/sleep"
    umoci init --layout "$layout" >/dev/null
    umoci new --image "$layout:busybox" >/dev/null
    umoci insert --image "$layout:busybox" "$stage/bin" /bin >/dev/null
    umoci config --image "$layout:busybox" --config.cmd sh >/dev/null
    skopeo copy -q --dest-tls-verify=false "oci:$layout:busybox" "docker://$IMAGE"

    umoci new --image "$layout:pause" >/dev/null
    if [ "$PAUSE_KIND" = "static pause (C)" ]; then
        cp "$WORK/pause" "$stage/pause/pause"
        umoci insert --image "$layout:pause" "$stage/pause/pause" /pause >/dev/null
        umoci config --image "$layout:pause" --config.entrypoint /pause >/dev/null
    else
        umoci insert --image "$layout:pause" "$stage/bin" /bin >/dev/null
        umoci config --image "$layout:pause" --config.entrypoint /bin/busybox \
            --config.cmd sleep --config.cmd 2147483647 >/dev/null
    fi
    skopeo copy -q --dest-tls-verify=false "oci:$layout:pause" "docker://$PAUSE"
}

# podbench against ENGINE's socket: pull, warm up, time PODS pods, leave them running.
time_pods() { # engine socket
    local engine=$1 socket=$2
    "$PODBENCH" --endpoint "$socket" --image "$IMAGE" --pull \
        --warmup "$WARMUP" --pods "$PODS" --concurrency "$CONCURRENCY" \
        --cmd "$WORKLOAD" --log-dir "$WORK/logs/$engine" \
        --cgroup-parent "/podbench-$engine" >"$OUT/$engine.txt" 2>"$OUT/$engine.err" || {
        cat "$OUT/$engine.err" >&2
        die "$engine: podbench failed"
    }
    tail -n1 "$OUT/$engine.txt" >"$OUT/$engine.json"
    echo "$engine: $(json_num "$OUT/$engine.json" median_ms) ms median, $(json_num "$OUT/$engine.json" p99_ms) ms p99 over $PODS pods"
}

# Waits until a CRI socket answers (podbench --cleanup lists the pods: a no-op at start).
wait_cri() { # socket pid log
    local i
    for i in $(seq 300); do
        kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "$3: the engine exited at start"; }
        if [ -S "$1" ] && "$PODBENCH" --endpoint "$1" --cleanup --call-timeout 5 >/dev/null 2>&1; then
            return
        fi
        sleep 0.1
    done
    cat "$3" >&2
    die "no CRI answer on $1"
}

phase_berthd() {
    local d=$WORK/berthd
    cat >"$d/berthd.toml" <<TOML
socket = "$RUN/berthd/berthd.sock"
state_dir = "$d/state"
run_dir = "$RUN/berthd"
root = "$d/root"
registries_conf = "$d/registries.toml"
shim = "$BERTH_SHIM"
cgroup_driver = "cgroupfs"
cni_conf_dir = "$WORK/net.d"
cni_bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
TOML
    cat >"$d/registries.toml" <<TOML
[[registry]]
prefix = "$REGISTRY"
insecure = true
TOML
    setsid "$BERTHD" --config "$d/berthd.toml" >"$d/berthd.log" 2>&1 &
    echo $! >"$d/pid"
    wait_cri "$RUN/berthd/berthd.sock" "$(cat "$d/pid")" "$d/berthd.log"
    time_pods berthd "$RUN/berthd/berthd.sock"
    sleep "$SETTLE"
    measure berthd "$(basename "$BERTH_SHIM")" "$(cat "$d/pid")"
    stop_engine berthd "$RUN/berthd/berthd.sock" "$d/pid"
}

phase_containerd() {
    local d=$WORK/containerd
    mkdir -p "$d/certs.d/$REGISTRY"
    cat >"$d/certs.d/$REGISTRY/hosts.toml" <<TOML
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
    # containerd gives the sandbox an oom_score_adj of -998, which needs CAP_SYS_RESOURCE;
    # where root lacks it (some VMs and containers), runc init fails ("can't get final
    # child's PID from pipe"), unless containerd keeps to its own score.
    local restrict=false
    (((16#$(awk '/^CapEff/ { print $2 }' /proc/self/status) >> 24) & 1)) || restrict=true
    cat >"$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = $restrict
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
TOML
    setsid containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
    echo $! >"$d/pid"
    wait_cri "$RUN/containerd/containerd.sock" "$(cat "$d/pid")" "$d/containerd.log"
    # The sandbox image first, so that no timed pod pulls it.
    "$PODBENCH" --endpoint "$RUN/containerd/containerd.sock" --image "$PAUSE" --pull 2>/dev/null
    time_pods containerd "$RUN/containerd/containerd.sock"
    sleep "$SETTLE"
    measure containerd containerd-shim-runc-v2 "$(cat "$d/pid")"
    stop_engine containerd "$RUN/containerd/containerd.sock" "$d/pid"
}

# podman run -d of the same image, PODS times: one conmon per container.
phase_podman() {
    local d=$WORK/podman i t0 t1
    local -a podman=(podman --root "$d/root" --runroot "$d/run" --tmpdir "$d/tmp"
        --storage-driver overlay --cgroup-manager cgroupfs --events-backend file --runtime runc)
    echo "${podman[*]}" >"$d/cmd"
    "${podman[@]}" pull -q --tls-verify=false "$IMAGE" >/dev/null
    : >"$OUT/podman-run.ms"
    for i in $(seq "$PODS"); do
        t0=$(date +%s%N)
        "${podman[@]}" run -d --network none --cgroup-parent /podbench-podman \
            --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
            "$IMAGE" $WORKLOAD >/dev/null
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000)) | awk '{ printf "%.3f\n", $1 / 1000 }' >>"$OUT/podman-run.ms"
    done
    echo "podman: $PODS containers running ($(stat_of "$OUT/podman-run.ms" median) ms median per podman run -d)"
    sleep "$SETTLE"
    measure conmon conmon ""
    "${podman[@]}" rm -f -a -t 0 >/dev/null 2>&1 || true
}

# Memory of ENGINE's pods: for each monitor process of this run (argv[0] named SHIM, its
# parent not one),
# its PSS and RSS, and the PSS of the monitor with its descendants less the workload (the
# pod's pause, if any). One line per monitor in $OUT/mem-ENGINE.txt: pid pss rss overhead.
measure() { # engine shim-exe-name daemon-pid
    local engine=$1 shim=$2 daemon=$3 d pid st mem cmd
    : >"$WORK/procs"
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        st=$(cat "$d/stat" 2>/dev/null) || continue
        mem=$(awk '/^Pss:/ { p = $2 } /^Rss:/ { r = $2 } END { print p + 0, r + 0 }' "$d/smaps_rollup" 2>/dev/null) || continue
        # shellcheck disable=SC2086
        set -- ${st##*) }
        cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null | sed 's/ $//')
        # argv[0], not /proc/PID/exe: berth-shim runs from a detached bind mount of itself.
        printf '%s\t%s\t%s\t%s\t%s\n' "$pid" "$2" "$mem" "$(basename "${cmd%% *}")" "$cmd" >>"$WORK/procs"
    done
    cp "$WORK/procs" "$OUT/procs-$engine.tsv"
    awk -F'\t' -v shim="$shim" -v workload="$WORKLOAD" -v run="$RUN/" -v work="$WORK/" '
        { split($3, m, " "); pid[NR] = $1; ppid[$1] = $2; pss[$1] = m[1]; rss[$1] = m[2]
          exe[$1] = $4; cmd[$1] = $5; kids[$2] = kids[$2] " " $1 }
        function tree(p,    n, k, i, s) {
            if (cmd[p] == workload) return 0
            s = pss[p]; n = split(kids[p], k, " ")
            for (i = 1; i <= n; i++) s += tree(k[i])
            return s
        }
        END {
            for (i = 1; i <= NR; i++) {
                p = pid[i]
                # Ours only: the host may run other shims of the same name.
                if (exe[p] == shim && exe[ppid[p]] != shim &&
                    (index(cmd[p], run) || index(cmd[p], work)))
                    print p, pss[p], rss[p], tree(p)
            }
        }' "$WORK/procs" >"$OUT/mem-$engine.txt"
    # One monitor's smaps_rollup in full (anonymous against file-backed, shared, ...).
    pid=$(awk 'NR == 1 { print $1 }' "$OUT/mem-$engine.txt")
    [ -z "$pid" ] || cp "/proc/$pid/smaps_rollup" "$OUT/smaps_rollup-$engine.txt" 2>/dev/null || true
    awk '{ print $2 }' "$OUT/mem-$engine.txt" >"$OUT/pss-$engine.kib"
    awk '{ print $3 }' "$OUT/mem-$engine.txt" >"$OUT/rss-$engine.kib"
    awk '{ print $4 }' "$OUT/mem-$engine.txt" >"$OUT/pod-$engine.kib"
    if [ -n "$daemon" ]; then
        awk '/^Pss:/ { print $2 }' "/proc/$daemon/smaps_rollup" >"$OUT/daemon-$engine.kib"
    fi
    local n
    n=$(wc -l <"$OUT/mem-$engine.txt")
    [ "$n" -eq "$PODS" ] || echo "pods.sh: warning: $engine: $n $shim processes for $PODS pods" >&2
    echo "$engine: $n $shim, PSS median $(stat_of "$OUT/pss-$engine.kib" median) KiB"
}

stop_engine() { # engine socket pidfile
    "$PODBENCH" --endpoint "$2" --cleanup --concurrency 4 >/dev/null 2>>"$OUT/$1.err" ||
        echo "pods.sh: $1: removing the pods failed (see $OUT/$1.err)" >&2
    local pid
    pid=$(cat "$3")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$3"
}

# ---------------------------------------------------------------------------
# Numbers and the report
# ---------------------------------------------------------------------------
json_num() { # file key
    sed -n "s/.*\"$2\":\([0-9.e+-]*\).*/\1/p" "$1"
}

# Median / mean / max of a file with one number per line.
stat_of() {
    sort -n "$1" | awk -v what="$2" '
        { v[NR] = $1; s += $1 }
        END {
            if (NR == 0) { print "n/a"; exit }
            if (what == "max") print v[NR]
            else if (what == "mean") printf "%.0f\n", s / NR
            else if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2fx", a / b }'; }
f1() { awk -v x="$1" 'BEGIN { if (x == "" || x == "n/a") print "n/a"; else printf "%.1f", x }'; }
kib() { [ -s "$1" ] && stat_of "$1" "$2" || echo n/a; }

report() {
    local b=$OUT/berthd.json c=$OUT/containerd.json key row
    echo "## Pod start (RunPodSandbox + CreateContainer + StartContainer), $PODS pods"
    echo
    echo "| ms | berthd | containerd | berthd / containerd |"
    echo "|---|---:|---:|---:|"
    for row in "median:median_ms" "p99:p99_ms" "mean:mean_ms" "min:min_ms" "max:max_ms" \
        "RunPodSandbox, median:run_pod_sandbox" "CreateContainer, median:create_container" \
        "StartContainer, median:start_container"; do
        key=${row#*:}
        echo "| ${row%%:*} | $(f1 "$(json_num "$b" "$key")") | $(f1 "$(json_num "$c" "$key")") |" \
            "$(ratio "$(json_num "$b" "$key")" "$(json_num "$c" "$key")") |"
    done
    echo
    echo "## Memory per idle pod (KiB, median over the pods; PSS from smaps_rollup)"
    echo
    echo "| KiB | berth-shim | containerd-shim-runc-v2 | conmon | berth-shim / containerd | berth-shim / conmon |"
    echo "|---|---:|---:|---:|---:|---:|"
    local what
    for row in "monitor PSS:pss" "monitor RSS:rss" "monitor + pause PSS:pod"; do
        what=${row#*:}
        echo "| ${row%%:*} | $(kib "$OUT/$what-berthd.kib" median) | $(kib "$OUT/$what-containerd.kib" median) |" \
            "$(kib "$OUT/$what-conmon.kib" median) |" \
            "$(ratio "$(kib "$OUT/$what-berthd.kib" median)" "$(kib "$OUT/$what-containerd.kib" median)") |" \
            "$(ratio "$(kib "$OUT/$what-berthd.kib" median)" "$(kib "$OUT/$what-conmon.kib" median)") |"
    done
    echo "| daemon PSS, $PODS pods running | $(kib "$OUT/daemon-berthd.kib" max) (berthd) | $(kib "$OUT/daemon-containerd.kib" max) (containerd) | | $(ratio "$(kib "$OUT/daemon-berthd.kib" max)" "$(kib "$OUT/daemon-containerd.kib" max)") | |"
    echo
    local start_ratio pss_b pss_m
    start_ratio=$(ratio "$(json_num "$b" median_ms)" "$(json_num "$c" median_ms)")
    pss_b=$(kib "$OUT/pss-berthd.kib" median)
    pss_m=$(kib "$OUT/pss-conmon.kib" median)
    echo "Targets: pod start median <= 0.50x containerd's: $start_ratio ($(verdict "$(json_num "$b" median_ms)" "$(json_num "$c" median_ms)" 0.5))." \
        "berth-shim PSS below conmon's: $pss_b vs $pss_m KiB ($(verdict "$pss_b" "$pss_m" 1 strict))."
    if [ -s "$OUT/podman-run.ms" ]; then
        echo
        echo "For reference only (a CLI per container, no pod): \`podman run -d\` took $(stat_of "$OUT/podman-run.ms" median) ms median."
    fi
}

verdict() { # value reference factor [strict]
    awk -v a="$1" -v b="$2" -v f="$3" -v strict="${4:-}" 'BEGIN {
        if (a == "" || b == "" || a == "n/a" || b == "n/a") { print "not measured"; exit }
        ok = strict ? (a < b * f) : (a <= b * f)
        print ok ? "met" : "not met" }'
}

# ---------------------------------------------------------------------------
# Clean-up: pods, engines, processes, mounts, cgroups
# ---------------------------------------------------------------------------
cleanup() {
    set +e
    local d pid
    cp "$WORK/berthd/berthd.log" "$WORK/containerd/containerd.log" "$WORK/registry.log" "$OUT/" 2>/dev/null
    for d in berthd containerd; do
        [ -f "$WORK/$d/pid" ] || continue
        "$PODBENCH" --endpoint "$RUN/$d/$d.sock" --cleanup --concurrency 4 --call-timeout 30 >/dev/null 2>&1
        pid=$(cat "$WORK/$d/pid")
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -f "$WORK/podman/cmd" ]; then
        # shellcheck disable=SC2046
        $(cat "$WORK/podman/cmd") rm -f -a -t 0 >/dev/null 2>&1
    fi
    kill "$(cat "$WORK/registry.pid" 2>/dev/null)" 2>/dev/null
    # Whatever is left: every process in this network namespace but this shell, and every
    # one whose command line names this run's directories (berth-shim lives in its pod's
    # network namespace: --dir RUN/...; containerd's shims: -address RUN/...; conmon: the
    # podman root under WORK), then every process in the pods' cgroups.
    local me ns
    me=$(readlink /proc/$$/ns/net)
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        case $pid in $$ | "$PPID" | "$BASHPID") continue ;; esac
        ns=$(readlink "$d/ns/net" 2>/dev/null) || continue
        if [ "$ns" = "$me" ] || grep -qaF -e "$RUN/" -e "$WORK/" "$d/cmdline" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null
        fi
    done
    local g procs
    for g in /sys/fs/cgroup/*/podbench-* /sys/fs/cgroup/unified/podbench-*; do
        [ -d "$g" ] || continue
        for procs in $(find "$g" -name cgroup.procs); do
            xargs -r kill -9 <"$procs" 2>/dev/null
        done
    done
    sleep 0.5
    unmount_under "$WORK"
    unmount_under "$RUN"
    unmount_under /run/containerd
    for g in /sys/fs/cgroup/*/podbench-* /sys/fs/cgroup/unified/podbench-*; do
        [ -d "$g" ] && find "$g" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    return 0
}

# Every mount point at or under $1, deepest first.
unmount_under() {
    awk -v p="$1" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo |
        sort -r | while read -r m; do umount -n -l "$m" 2>/dev/null; done
    return 0
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

PODS=${PODS:-50}
WARMUP=${WARMUP:-3}
CONCURRENCY=${CONCURRENCY:-1}
SETTLE=${SETTLE:-5}
CONMON=${CONMON:-1}
BUILD=${BUILD:-1}

[ "$(id -u)" -eq 0 ] || die "must run as root"
for tool in containerd containerd-shim-runc-v2 runc docker-registry skopeo umoci unshare \
    setsid mountpoint ip curl cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done
if [ "$CONMON" = 1 ]; then
    for tool in podman conmon; do
        command -v "$tool" >/dev/null || die "$tool not found (or CONMON=0)"
    done
fi
[ -x /bin/busybox ] || die "/bin/busybox not found (busybox-static)"
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] ||
    die "CNI plugins not found in /usr/lib/cni (containernetworking-plugins)"

cd "$repo"
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || die "cannot find cargo's target directory"
if [ "$BUILD" = 1 ]; then
    cargo build --release -p berthd -p berth-shim
    cargo build --release -p berthd --example podbench
fi
BERTHD=$target/release/berthd
BERTH_SHIM=$target/release/berth-shim
PODBENCH=$target/release/examples/podbench
for b in "$BERTHD" "$BERTH_SHIM" "$PODBENCH"; do
    [ -x "$b" ] || die "$b not built (BUILD=1 builds it)"
done
SOURCE=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "not a git checkout")
OUT=${OUT:-$target/bench/pods-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

WORK=$(mktemp -d /var/tmp/berth-pods.XXXXXX)
RUN=$(mktemp -d /run/pb.XXXXXX)
made_run_containerd=
if [ ! -e /run/containerd ]; then
    mkdir /run/containerd
    made_run_containerd=1
fi
outer_cleanup() {
    rm -rf "$WORK"
    rmdir "$RUN" 2>/dev/null || true
    if [ -n "$made_run_containerd" ]; then
        rmdir /run/containerd 2>/dev/null || true
    fi
}
trap outer_cleanup EXIT
trap 'exit 130' INT TERM

# The kubelet's pause, when there is a C compiler: reaps orphans, exits on SIGINT/SIGTERM.
PAUSE_KIND="busybox sleep"
if command -v cc >/dev/null; then
    cat >"$WORK/pause.c" <<'C'
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int s) { (void)s; _exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction a = {0};
    a.sa_handler = quit;
    sigaction(SIGINT, &a, 0);
    sigaction(SIGTERM, &a, 0);
    a.sa_handler = reap;
    a.sa_flags = SA_NOCLDSTOP;
    sigaction(SIGCHLD, &a, 0);
    for (;;) pause();
}
C
    if cc -static -Os -s -o "$WORK/pause" "$WORK/pause.c" 2>"$WORK/pause.err"; then
        PAUSE_KIND="static pause (C)"
    fi
fi

export PODS WARMUP CONCURRENCY SETTLE CONMON OUT WORK RUN SOURCE BERTHD BERTH_SHIM PODBENCH PAUSE_KIND
unshare --mount --net --propagation private bash "$self" --inside
