#!/usr/bin/env bash
# The release build of berth: optimised, and statically linked against glibc and libseccomp
# (static-PIE, so ASLR stays). Static linking keeps libc.so and ld.so out of every berth
# process: peak RSS drops from ~4.2 MB to ~3.1 MB (docs/benchmark.md).
#
# Where lld is installed (Debian's lld-19; scripts/install-deps.sh), berth is linked with
# lld and scripts/berth-symbols.order, which puts the functions a container start runs next
# to each other: the kernel maps a binary 64 KiB at a time, so packed hot code means far
# fewer resident pages (docs/benchmark.md). Without lld the build is the same but for that.
#
# Prints the path of the stripped binary; the one with its symbol table (what
# scripts/symbol-order.py traces) is beside it without the `.stripped` suffix.
# `build-release.sh berthctl` builds berthctl instead, linked dynamically (its registry
# client resolves names through glibc's NSS, which static glibc cannot load).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
[ "$(uname -m)" = x86_64 ] || target="$(uname -m)-unknown-linux-gnu"
export LIBSECCOMP_LINK_TYPE=static
export LIBSECCOMP_LIB_PATH=/usr/lib/$(uname -m)-linux-gnu
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
# --target keeps these flags off build scripts and proc macros, which must stay dynamic.
pkg="${1:-berth}"
case "$pkg" in
  berth)
    flags="-C target-feature=+crt-static"
    lld="$(ls /usr/lib/llvm-*/bin/ld.lld 2>/dev/null | sort -V | tail -n 1)"
    if [ -n "$lld" ] && [ -f scripts/berth-symbols.order ]; then
      # Under a name that changes with its content, so that cargo relinks when it does.
      sum="$(sha256sum scripts/berth-symbols.order | cut -c1-16)"
      mkdir -p "$target_dir"
      order="$target_dir/berth-symbols-$sum.order"
      cp scripts/berth-symbols.order "$order"
      flags="$flags -C link-arg=-fuse-ld=lld -C link-arg=-B$(dirname "$lld")"
      flags="$flags -C link-arg=-Wl,--symbol-ordering-file=$order"
      flags="$flags -C link-arg=-Wl,--no-warn-symbol-ordering"
    fi
    # The symbol table stays in cargo's output (the order is traced on it; profile
    # settings also change symbol names, so it must be this very build); the copy printed
    # is stripped.
    RUSTFLAGS="${RUSTFLAGS:-} $flags" CARGO_PROFILE_RELEASE_STRIP=none \
      cargo build --release -p berth --target "$target" >&2
    out="$target_dir/$target/release/berth"
    strip --strip-all -o "$out.stripped" "$out"
    echo "$out.stripped" ;;
  berthctl)
    cargo build --profile release-ctl -p berthctl --target "$target" >&2
    echo "$target_dir/$target/release-ctl/berthctl" ;;
  *) echo "build-release.sh: berth or berthctl" >&2; exit 1 ;;
esac
