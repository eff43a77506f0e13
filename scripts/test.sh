#!/usr/bin/env bash
# The whole test suite: unit tests, root integration tests with real containers, and the
# real-client tests (podman, containerd's ctr, docker). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh: the integration tests run real containers and need root" >&2
  exit 1
fi
# Unit tests of every crate, then the integration test binaries one after another.
cargo test --workspace --lib --bins 2>&1
cargo test -p berth --test runtime -- --test-threads=2 2>&1
cargo test -p berth --test clients -- --test-threads=1 2>&1
