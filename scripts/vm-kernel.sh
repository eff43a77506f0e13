#!/usr/bin/env bash
# The guest kernel of Berth's VMs (docs/vm.md), from Debian's linux-image-cloud-amd64: the
# package is downloaded with apt-get and unpacked with dpkg-deb into a cache directory, never
# installed on the host. Idempotent; needs root and Debian's apt (no other network).
#
# Writes into $BERTH_VM_KERNEL_DIR (default /var/cache/berth/vm-kernel):
#   vmlinuz            the kernel image
#   config             the kernel's build configuration, for reference
#   modules/           the modules the guest needs and their dependencies, at their paths
#                      under lib/modules/VERSION/, with the matching lines of modules.dep
#   VERSION            kernel=, package=, package_version=, modules= (in load order) and
#                      builtin= (asked for, but built into this kernel)
#
# The modules asked for are $BERTH_VM_KERNEL_MODULES (default below); Debian's cloud kernel
# builds virtio, virtio-mmio, virtio-blk, virtio-console, erofs and overlayfs as modules, so
# the initramfs loads them.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

cache="${BERTH_VM_KERNEL_DIR:-/var/cache/berth/vm-kernel}"
wanted="${BERTH_VM_KERNEL_MODULES:-virtio_mmio virtio_blk virtio_console erofs overlay virtiofs}"
meta=linux-image-cloud-amd64

die() { echo "vm-kernel.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (apt-get download as root, cache under /var/cache)"
for tool in apt-get apt-cache dpkg-deb depmod; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/install-deps.sh installs it)"
done

# The versioned image package that the meta package depends on, as apt would install it.
candidate() {
  apt-cache show --no-all-versions "$meta" 2>/dev/null \
    | sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n1
}
read -r pkg pkgver < <(candidate) || true
if [ -z "${pkg:-}" ]; then
  apt-get update -q >/dev/null
  read -r pkg pkgver < <(candidate) || true
fi
[ -n "${pkg:-}" ] && [ -n "${pkgver:-}" ] || die "apt knows no $meta with a linux-image-* dependency"

if [ -f "$cache/VERSION" ] && [ -f "$cache/vmlinuz" ] && [ -f "$cache/modules/modules.dep" ] \
  && grep -qxF "package=$pkg" "$cache/VERSION" && grep -qxF "package_version=$pkgver" "$cache/VERSION" \
  && grep -qxF "wanted=$wanted" "$cache/VERSION"; then
  echo "vm-kernel.sh: $cache is up to date ($pkg $pkgver)"
  exit 0
fi

mkdir -p "$(dirname "$cache")"
work="$(mktemp -d "$(dirname "$cache")/.vm-kernel.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# apt-get download writes into the current directory (unsandboxed: _apt cannot write into a
# root-owned temp dir, which apt only warns about).
if ! (cd "$work" && apt-get download -q "$pkg=$pkgver" >/dev/null 2>&1); then
  # Stale lists: the archive may have moved on to a newer version.
  apt-get update -q >/dev/null
  read -r pkg pkgver < <(candidate) || die "apt knows no $meta after apt-get update"
  (cd "$work" && apt-get download -q "$pkg=$pkgver" >/dev/null) \
    || die "apt-get download $pkg=$pkgver failed"
fi
deb="$(ls "$work"/*.deb)"
mkdir "$work/root"
dpkg-deb -x "$deb" "$work/root"

kver=""
for d in "$work"/root/lib/modules/*/; do kver="$(basename "$d")"; done
[ -n "$kver" ] && [ -f "$work/root/boot/vmlinuz-$kver" ] || die "$deb has no vmlinuz and modules"
mods="$work/root/lib/modules/$kver"
# Debian generates modules.dep in the package's postinst; do it here, in the unpacked tree.
depmod -b "$work/root" "$kver"

declare -A dep_of=() seen=()
while IFS= read -r line; do
  path="${line%%:*}"
  dep_of["$path"]="${line#*: }"
done < <(sed 's/: *$/: /' "$mods/modules.dep")

path_of() { # module name -> its path in modules.dep ('-' and '_' are one)
  local want="${1//-/_}" p n
  for p in "${!dep_of[@]}"; do
    n="${p##*/}"; n="${n%%.ko*}"
    [ "${n//-/_}" = "$want" ] && { echo "$p"; return 0; }
  done
  return 1
}

order=()
visit() { # depth first, dependencies before the module
  local p="$1" d
  [ -n "${seen[$p]:-}" ] && return 0
  seen["$p"]=1
  for d in ${dep_of[$p]}; do visit "$d"; done
  order+=("$p")
}

builtin=()
for m in $wanted; do
  if p="$(path_of "$m")"; then
    visit "$p"
  elif grep -q "/${m//_/[-_]}\.ko$" "$mods/modules.builtin"; then
    builtin+=("$m")
  else
    die "$pkg has no module $m, built in or loadable"
  fi
done

out="$work/out"
mkdir -p "$out/modules"
cp "$work/root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$work/root/boot/config-$kver" "$out/config"
names=()
for p in "${order[@]}"; do
  mkdir -p "$out/modules/$(dirname "$p")"
  cp "$mods/$p" "$out/modules/$p"
  echo "$p:${dep_of[$p]:+ ${dep_of[$p]}}" >>"$out/modules/modules.dep"
  n="${p##*/}"; names+=("${n%%.ko*}")
done
{
  echo "kernel=$kver"
  echo "package=$pkg"
  echo "package_version=$pkgver"
  echo "wanted=$wanted"
  echo "modules=${names[*]}"
  echo "builtin=${builtin[*]:-}"
} >"$out/VERSION"

# Replace the cache as a whole: readers see the old one or the new one.
if [ -e "$cache" ]; then
  mv "$cache" "$work/old"
fi
mv "$out" "$cache"
echo "vm-kernel.sh: $cache: $pkg $pkgver, kernel $kver, modules: ${names[*]}"
