#!/usr/bin/env bash
# Builds berth-agent, the VM guest's init, linked statically (the guest's initramfs has no
# libc, so glibc and libseccomp are linked in), and installs it where berthctl and berthd
# look for it: /usr/local/lib/berth/berth-agent (DEST=path changes that). Prints the path.
# Its own target directory: the flags differ from the workspace's build.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-gnu
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/agent-static"
dest="${DEST:-/usr/local/lib/berth/berth-agent}"
# With --target, RUSTFLAGS reach the target's crates only, not build scripts.
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" \
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
  cargo build --release --quiet -p berth-agent --bin berth-agent \
    --target "$triple" --target-dir "$target_dir" >&2
bin="$target_dir/$triple/release/berth-agent"
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
  echo "build-agent.sh: $bin is linked dynamically" >&2
  exit 1
fi
install -D -m 0755 "$bin" "$dest"
echo "$dest"
