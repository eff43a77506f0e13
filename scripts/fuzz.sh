#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ and runs each for SECONDS_PER_TARGET (default 20), from the
# committed seeds in fuzz/corpus/<target>/. Fails if a target crashes, and prints the crash
# input and the command that reproduces it. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Uses the nightly toolchain where rustup has one, else stable with RUSTC_BOOTSTRAP=1 (which
# cargo-fuzz's AddressSanitizer and coverage flags need); BERTH_FUZZ_TOOLCHAIN=nightly or
# stable forces one. Both build with AddressSanitizer. Installs cargo-fuzz from crates.io
# into ~/.cargo/bin when it is missing. Build output goes to $CARGO_TARGET_DIR/fuzz when
# CARGO_TARGET_DIR is set, else to fuzz/target; crash inputs go to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/fuzz.sh [SECONDS_PER_TARGET]"
secs="${1:-20}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

toolchain_wanted="${BERTH_FUZZ_TOOLCHAIN:-auto}"
case "$toolchain_wanted" in
  auto | nightly | stable) ;;
  *)
    echo "fuzz.sh: BERTH_FUZZ_TOOLCHAIN is auto, nightly or stable, not $toolchain_wanted" >&2
    exit 2
    ;;
esac
if [ "$toolchain_wanted" = auto ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain_wanted=nightly
fi
if [ "$toolchain_wanted" = nightly ]; then
  toolchain=(+nightly)
  env_prefix=""
else
  toolchain=()
  export RUSTC_BOOTSTRAP=1
  env_prefix="RUSTC_BOOTSTRAP=1 "
fi
fuzz=(cargo "${toolchain[@]}" fuzz)
# -a: debug assertions, so integer overflow panics as it does in a debug build.
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$PWD/fuzz/target}"
opts=(--sanitizer address -a --target-dir "$target_dir")
triple="$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')"

echo "== fuzz: $("${fuzz[@]}" --version), $(rustc "${toolchain[@]}" --version)"
start=$SECONDS
(cd fuzz && "${fuzz[@]}" build "${opts[@]}")
echo "== fuzz: built in $((SECONDS - start)) s"

mapfile -t targets < <(cd fuzz && "${fuzz[@]}" list)
if ((${#targets[@]} == 0)); then
  echo "fuzz: cargo fuzz list found no targets in fuzz/: nothing was fuzzed" >&2
  exit 1
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/berth-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"

failed=()
for t in "${targets[@]}"; do
  # The binaries just built are run directly (`cargo fuzz run` would rebuild first if the tree
  # changed meanwhile). New inputs go to the scratch corpus, the first directory; the seeds
  # stay as committed.
  bin="$target_dir/$triple/release/$t"
  mkdir -p "$work/corpus/$t" "fuzz/artifacts/$t"
  log="$work/$t.log"
  echo "== fuzz: $t for $secs s"
  if TMPDIR="$work/tmp" "$bin" -artifact_prefix="$PWD/fuzz/artifacts/$t/" \
    -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
    "$work/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)"
    echo "   ok: ${runs:-?} runs, ${cov:-cov: ?}, corpus +$(find "$work/corpus/$t" -type f | wc -l)"
  else
    failed+=("$t")
    # From the panic message or the sanitizer's report on, with the stack; else the end.
    report="$(grep -v '^INFO: \|^#[0-9]' "$log" |
      sed -n '/panicked at\|==ERROR: \|^ALARM: /,$p' | head -n 60)"
    if [ -n "$report" ]; then
      echo "$report"
      grep '^SUMMARY: ' "$log" || true
    else
      tail -n 40 "$log"
    fi
    crash="$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)"
    echo "!! fuzz: $t crashed"
    echo "!! crash input: ${crash:-(none written; see the log above)}"
    echo "!! reproduce:   (cd fuzz && ${env_prefix}${fuzz[*]} run ${opts[*]} $t ${crash:-CRASH_INPUT})"
    echo "!!          or: $bin ${crash:-CRASH_INPUT}"
  fi
done

echo "== fuzz: $((SECONDS - start)) s in all"
if ((${#failed[@]})); then
  echo "fuzz: crashed: ${failed[*]}" >&2
  exit 1
fi
