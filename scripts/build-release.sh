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
    out="$target_dir/$target/release/berth"
    lld="$(ls /usr/lib/llvm-*/bin/ld.lld 2>/dev/null | sort -V | tail -n 1)"
    # The symbol table stays in cargo's output (the order names its symbols; profile
    # settings change symbol names, so it must be this very build); the copy printed is
    # stripped.
    build() { # ORDER_FILE (empty: no ordering)
      local flags="-C target-feature=+crt-static"
      if [ -n "$1" ]; then
        flags="$flags -C link-arg=-fuse-ld=lld -C link-arg=-B$(dirname "$lld")"
        flags="$flags -C link-arg=-Wl,--symbol-ordering-file=$1"
        flags="$flags -C link-arg=-Wl,--no-warn-symbol-ordering"
      fi
      RUSTFLAGS="${RUSTFLAGS:-} $flags" CARGO_PROFILE_RELEASE_STRIP=none \
        cargo build --release -p berth --target "$target" >&2
    }
    # Under a name that changes with its content, so that cargo relinks when it does.
    stage() { # FILE: its path under the target dir
      local p="$target_dir/berth-symbols-$(sha256sum "$1" | cut -c1-16).order"
      mkdir -p "$target_dir"
      cp "$1" "$p"
      echo "$p"
    }
    if [ -n "$lld" ] && [ -f scripts/berth-symbols.order ]; then
      order="$(stage scripts/berth-symbols.order)"
      # A remapping of this very order file, made by an earlier build.
      remapped="${order%.order}.remapped"
      if [ -f "$remapped" ]; then
        order="$(stage "$remapped")"
      fi
      build "$order"
      # Names go stale when a crate's dependencies change (the hash in them does):
      # found again under their new names, and linked once more.
      total=$(wc -l <"$order")
      found=$(nm --defined-only "$out" | awk '{print $3}' | sort -u |
        comm -12 - <(sort -u "$order") | wc -l)
      if [ $((found * 10)) -lt $((total * 9)) ]; then
        echo "build-release.sh: $found of $total ordered symbols found; remapping" >&2
        python3 scripts/symbol-order.py --remap "$out" scripts/berth-symbols.order "$remapped"
        build "$(stage "$remapped")"
      fi
    else
      build ""
    fi
    strip --strip-all -o "$out.stripped" "$out"
    echo "$out.stripped" ;;
  berthctl)
    cargo build --profile release-ctl -p berthctl --target "$target" >&2
    echo "$target_dir/$target/release-ctl/berthctl" ;;
  *) echo "build-release.sh: berth or berthctl" >&2; exit 1 ;;
esac
