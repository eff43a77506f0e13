#!/usr/bin/env bash
# The release build of berth: optimised, and statically linked against glibc and libseccomp
# (static-PIE, so ASLR stays). Static linking keeps libc.so and ld.so out of every berth
# process: peak RSS drops from ~4.2 MB to ~3.1 MB (docs/benchmark.md).
# Prints the path of the binary. `build-release.sh berthctl` builds berthctl instead, linked
# dynamically (its registry client resolves names through glibc's NSS, which static glibc
# cannot load).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
[ "$(uname -m)" = x86_64 ] || target="$(uname -m)-unknown-linux-gnu"
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH=/usr/lib/$(uname -m)-linux-gnu
# --target keeps these flags off build scripts and proc macros, which must stay dynamic.
pkg="${1:-berth}"
case "$pkg" in
  berth)
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo build --release -p berth --target "$target" >&2 ;;
  berthctl)
    cargo build --profile release-ctl -p berthctl --target "$target" >&2
    echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/release-ctl/berthctl"
    exit 0 ;;
  *) echo "build-release.sh: berth or berthctl" >&2; exit 1 ;;
esac
echo "${CARGO_TARGET_DIR:-$PWD/target}/$target/release/$pkg"
