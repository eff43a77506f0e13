#!/usr/bin/env bash
# The whole test suite: unit tests, root integration tests with real containers, and the
# real-client tests (podman, containerd's ctr, docker). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the integration tests run real containers and need root" >&2
  exit 1
fi
# Library crates: unit tests and their root tests (cgroups on this host, seccomp filters).
cargo test --workspace --exclude berth --exclude berthctl 2>&1
# berthctl as a user drives it: images, containers, save/load, podman round trips.
cargo test -p berthctl -- --test-threads=2 2>&1
# The binary: its unit tests, the runtime suite, then the real clients one at a time.
cargo test -p berth --bins 2>&1
cargo test -p berth --test runtime -- --test-threads=2 2>&1
cargo test -p berth --test clients -- --test-threads=1 2>&1
# The parsers of untrusted input under libFuzzer, briefly (docs/fuzzing.md).
bash scripts/fuzz.sh "${BERTH_FUZZ_SECONDS:-20}" 2>&1
