#!/bin/sh
# Usage: bench/once.sh MODE RUNTIME ROOT BUNDLE
#
# One timed iteration of bench/bench.sh, with a container id of its own (the
# pid of this shell is unique among live processes, so ids never collide).
#
#   run    RUNTIME --root ROOT run --bundle BUNDLE ID   (the runtime deletes the
#          container itself once its process has exited)
#   cycle  create, start, then delete --force (the process may still be
#          running when delete comes; --force makes that a non-event)
#   noop   runs /bin/true: the cost of this wrapper alone, for reference
set -eu

mode=$1
runtime=$2
root=$3
bundle=$4
id=bench-$$

case $mode in
    run)
        exec "$runtime" --root "$root" run --bundle "$bundle" "$id"
        ;;
    cycle)
        "$runtime" --root "$root" create --bundle "$bundle" "$id"
        "$runtime" --root "$root" start "$id"
        exec "$runtime" --root "$root" delete --force "$id"
        ;;
    noop)
        exec /bin/true
        ;;
    *)
        echo "$0: unknown mode $mode" >&2
        exit 2
        ;;
esac
