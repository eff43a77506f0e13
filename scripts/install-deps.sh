#!/usr/bin/env bash
# Debian packages Berth builds against and tests with. Idempotent; needs root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(
  build-essential pkg-config libseccomp-dev   # build: libseccomp for the seccomp crate
  lld-19                                       # release link: hot code packed by symbol order
  protobuf-compiler                            # protoc for k8s-cri (the CRI client of the tests)
  busybox-static                               # the built-in test/demo rootfs
  runc crun runsc                              # peers for comparison and conformance; RuntimeClass handlers
  podman conmon containerd docker.io skopeo umoci uidmap  # real clients driving berth
  docker-registry apache2-utils openssl buildah  # image tests: a local registry, htpasswd, a test CA
  hyperfine time iproute2 procps               # benchmark and test tools
  criu                                         # checkpoint and restore
  containernetworking-plugins iptables         # berthd's pod networks (bridge, host-local, portmap)
  qemu-system-x86 kmod                         # VMs (docs/vm.md): QEMU microvm; depmod for scripts/vm-kernel.sh
  erofs-utils                                  # VMs: mkfs.erofs makes a read-only block image per layer
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
