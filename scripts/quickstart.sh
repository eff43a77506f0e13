#!/usr/bin/env bash
# Sets up Berth on a fresh Debian machine and runs a container on the built-in busybox rootfs.
# No registry, no network: the rootfs is made from the busybox-static package.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "quickstart: run as root (containers need it)" >&2; exit 1; }

bash scripts/install-deps.sh
BERTH=$(bash scripts/build-release.sh berth)
install -m 0755 "$BERTH" /usr/local/bin/berth
BERTHCTL=$(bash scripts/build-release.sh berthctl)
install -m 0755 "$BERTHCTL" /usr/local/bin/berthctl

# Berth's main job: run an image. The built-in image is made from busybox-static.
echo "== berthctl run --rm berth-busybox ..."
berthctl run --rm --memory 64m berth-busybox sh -c \
  'echo "hello from $(hostname) in $(cat /etc/os-release | head -1): uid $(id -u), $(ls /proc | grep -c "^[0-9]") process(es) visible"'
berthctl images

# The same image in a microVM of its own (docs/vm.md): Debian's cloud kernel, unpacked from
# apt, and the static berth-agent as the guest's init.
bash scripts/vm-kernel.sh
bash scripts/build-agent.sh >/dev/null
echo "== berthctl run --rm --isolation vm berth-busybox ..."
berthctl run --rm --isolation vm berth-busybox sh -c \
  'echo "hello from a VM: kernel $(uname -r) (the host runs '"$(uname -r)"'), $(ls /proc | grep -c "^[0-9]") process(es) visible"'

# The low-level runtime on its own: a bundle, as runc takes one.

bundle=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'berth delete --force demo >/dev/null 2>&1 || true; rm -rf "$bundle"' EXIT
mkdir -p "$bundle/rootfs"/{bin,proc,sys,dev,etc,tmp}
cp /bin/busybox "$bundle/rootfs/bin/busybox"
for a in $("$bundle/rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$bundle/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$bundle/rootfs/etc/passwd"
echo 'root:x:0:' > "$bundle/rootfs/etc/group"

cd "$bundle"
berth spec
# Not a terminal (so it runs from scripts too), and a command that shows where it is.
sed -i 's/"terminal": true/"terminal": false/' config.json
python3 - <<'PY'
import json
c = json.load(open("config.json"))
c["process"]["args"] = ["sh", "-c",
  "echo \"hello from $(hostname): pid $$, uid $(id -u), $(ls /proc | grep -c '^[0-9]') process(es) visible\"; "
  "echo \"root is read-only: $(touch /x 2>/dev/null && echo no || echo yes)\"; "
  "echo \"memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)\""]
c["linux"]["resources"]["memory"] = {"limit": 64 * 1024 * 1024}
json.dump(c, open("config.json", "w"), indent=2)
PY
echo "== berth run demo (bundle $bundle)"
berth run demo
