#!/usr/bin/env bash
# The whole test suite: unit tests, root integration tests with real containers, and the
# real-client tests (podman, containerd's ctr, docker). Needs root.
#
# Tests that skip say so on stderr ("SKIPPED name: reason", berth-testkit); the run ends with
# the list of them, and of the tests this machine cannot run at all (#[ignore]d), and why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the integration tests run real containers and need root" >&2
  exit 1
fi
log="$(mktemp "${TMPDIR:-/tmp}/berth-test.XXXXXX")"
not_run=()
summary() {
  local rc=$?
  echo
  echo "== skipped tests (the machine lacks what they check)"
  grep -h '^SKIPPED ' "$log" | sort -u || echo "none"
  echo "== tests not run on this machine"
  if ((${#not_run[@]})); then printf '%s\n' "${not_run[@]}"; else echo "none"; fi
  rm -f "$log"
  exit "$rc"
}
trap summary EXIT
exec > >(tee -a "$log") 2>&1

# Library crates: unit tests and their root tests (cgroups on this host, seccomp filters).
cargo test --workspace --exclude berth --exclude berthctl
# berthctl as a user drives it: images, containers, save/load, podman round trips.
cargo test -p berthctl -- --test-threads=2
# The binary: its unit tests, the runtime suite, then the real clients one at a time.
cargo test -p berth --bins
cargo test -p berth --test runtime -- --test-threads=2
# checkpoint/restore end to end needs a kernel where CRIU works (#[ignore]d otherwise).
if criu_says="$(criu check 2>&1)"; then
  cargo test -p berth --test runtime -- --ignored checkpoint::
else
  not_run+=("checkpoint::restored_container_counts_on_from_where_it_was_checkpointed: criu check fails here: $(echo "$criu_says" | tr '\n' ' ' | cut -c1-200)")
fi
cargo test -p berth --test clients -- --test-threads=1
# The parsers of untrusted input under libFuzzer, briefly (docs/fuzzing.md).
bash scripts/fuzz.sh "${BERTH_FUZZ_SECONDS:-20}"
