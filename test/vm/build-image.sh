#!/usr/bin/env bash
# Builds, or reuses from the cache, the kernel + initramfs that the device-mapper VM tests boot (see README.md).
#
# The host kernel may lack device-mapper, so the tests run under Debian's own distribution kernel. Its package is
# downloaded and unpacked into the cache, never installed on the host. The initramfs holds busybox, node, the mkfs and
# loop tools with their shared libraries, the kernel modules the tests need (dependencies resolved here), and
# test/vm/init as PID 1.
#
# Prints the image directory (vmlinuz, initramfs.cpio, kernel-release, manifest.txt, modules.txt) as the only line on
# stdout; progress goes to stderr.
#
# Environment:
#   GRAPHDRIVER_VM_DIR     cache root (default /var/tmp/graphdriver-vm)
#   GRAPHDRIVER_VM_KERNEL  kernel ABI to use, e.g. 6.1.0-50-amd64 (default: what linux-image-amd64 depends on)
set -Eeuo pipefail
trap 'echo "build-image: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_DIR=${GRAPHDRIVER_VM_DIR:-/var/tmp/graphdriver-vm}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(uname -m)" = x86_64 ] || die "only x86_64 hosts are supported (the guest runs the host's node binary)"

# Modules loaded in the guest, in this order, each after its own dependencies. The crc32c providers come first:
# libcrc32c, ext4 and xfs look the "crc32c" hash up by name and the guest has no modprobe to load one on demand.
OPTIONAL_MODULES_FIRST="crc32c_generic crc32c-intel"
REQUIRED_MODULES="loop dm-mod dm-bufio dm-bio-prison dm-persistent-data dm-thin-pool ext4 xfs overlay virtio_pci 9pnet_virtio 9p"

# Host programs copied into the guest (same paths) together with the libraries ldd reports for them.
REQUIRED_BINS="node mke2fs mkfs.xfs losetup blkid"
OPTIONAL_BINS="dmsetup e2fsck resize2fs xfs_growfs"
# Libraries a C++ addon built on this host needs even if node happens not to link them itself.
EXTRA_LIBS="libstdc++.so.6 libgcc_s.so.1"

# ---------------------------------------------------------------------------------------------------------------------
# 1. Host tools, installed with apt-get when missing.

declare -A PKG_OF=(
  [qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [mke2fs]=e2fsprogs [e2fsck]=e2fsprogs [resize2fs]=e2fsprogs
  [mkfs.xfs]=xfsprogs [xfs_growfs]=xfsprogs [losetup]=mount [blkid]=util-linux [flock]=util-linux [dmsetup]=dmsetup
  [dpkg-deb]=dpkg [sha256sum]=coreutils [timeout]=coreutils [base64]=coreutils
)

# root runs apt-get directly; others (CI runners) through passwordless sudo when there is one
AS_ROOT=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then AS_ROOT=(sudo -n); fi
can_apt() { command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ ${#AS_ROOT[@]} -gt 0 ]; }; }
apt_update() { can_apt && "${AS_ROOT[@]}" apt-get update >&2; }

apt_install() {
  can_apt || die "missing packages ($*): install them with apt-get (needs root or passwordless sudo)"
  log "apt-get install $*"
  if ! "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2; then
    apt_update && "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2 ||
      die "apt-get install $* failed"
  fi
}

busybox_is_static() {   # (ldd exits 1 on a static binary)
  [ -x /bin/busybox ] && case $(LC_ALL=C ldd /bin/busybox 2>&1 || true) in *'not a dynamic executable'*) true ;; *) false ;; esac
}

ensure_tools() {
  local want=() c
  for c in "${!PKG_OF[@]}"; do command -v "$c" >/dev/null || want+=("${PKG_OF[$c]}"); done
  busybox_is_static || want+=(busybox-static)
  command -v node >/dev/null || die "node is not installed on the host"
  if [ ${#want[@]} -gt 0 ]; then apt_install $(printf '%s\n' "${want[@]}" | sort -u); fi
  busybox_is_static || die "/bin/busybox is not a static busybox (package busybox-static)"
}
ensure_tools

mkdir -p "$VM_DIR/kernels" "$VM_DIR/images"
exec 9>"$VM_DIR/.lock"
flock 9   # one builder at a time per cache

# ---------------------------------------------------------------------------------------------------------------------
# 2. Kernel: Debian's linux-image-<abi>-amd64, unpacked (not installed) into $VM_DIR/kernels/<abi>.

candidate_kernel() {
  # apt-cache takes seconds when apt keeps no binary cache: remember its answer until the package lists change.
  local lists memo=$VM_DIR/kernels/.candidate v
  lists=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
  if [ -f "$memo" ] && [ "$(cut -d' ' -f1 "$memo")" = "$lists" ]; then cut -d' ' -f2 "$memo"; return; fi
  v=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: <\{0,1\}linux-image-\([^>]*-amd64\)>\{0,1\}$/\1/p' | head -1)
  [ -n "$v" ] && echo "$lists $v" > "$memo"
  echo "$v"
}
newest_cached_kernel() {
  find "$VM_DIR/kernels" -mindepth 2 -maxdepth 2 -name .complete -printf '%T@ %h\n' 2>/dev/null | sort -n | tail -1 | sed 's|.*/||'
}

KVER=${GRAPHDRIVER_VM_KERNEL:-}
if [ -z "$KVER" ]; then
  KVER=$(candidate_kernel)
  if [ -z "$KVER" ] && apt_update; then KVER=$(candidate_kernel); fi
  if [ -z "$KVER" ]; then
    KVER=$(newest_cached_kernel)
    [ -n "$KVER" ] || die "cannot tell which kernel to use (apt-cache depends linux-image-amd64 says nothing); set GRAPHDRIVER_VM_KERNEL"
    log "apt knows no linux-image-amd64; using the cached kernel $KVER"
  fi
fi
case $KVER in *[!A-Za-z0-9.+~_-]*|'') die "bad kernel version '$KVER'";; esac
KDIR=$VM_DIR/kernels/$KVER

if [ ! -f "$KDIR/.complete" ]; then
  log "downloading linux-image-$KVER"
  tmp=$(mktemp -d "$VM_DIR/kernels/.dl-XXXXXX")
  # apt-get download drops to the _apt user; let it write there.
  chmod 0777 "$tmp"
  if ! (cd "$tmp" && apt-get download "linux-image-$KVER" >&2); then
    apt_update || true
    (cd "$tmp" && apt-get download "linux-image-$KVER" >&2) || { rm -rf "$tmp"; die "apt-get download linux-image-$KVER failed"; }
  fi
  mkdir "$tmp/root"
  dpkg -x "$tmp"/linux-image-*.deb "$tmp/root"
  rm -f "$tmp"/*.deb
  rm -rf "$KDIR"
  mv "$tmp/root" "$KDIR"
  rmdir "$tmp"
  touch "$KDIR/.complete"
fi

VMLINUZ=$KDIR/boot/vmlinuz-$KVER
MODDIR=
for d in "$KDIR/lib/modules/$KVER" "$KDIR/usr/lib/modules/$KVER"; do [ -d "$d" ] && MODDIR=$d; done
[ -f "$VMLINUZ" ] || die "no $VMLINUZ in the unpacked package"
[ -n "$MODDIR" ] || die "no modules directory for $KVER in the unpacked package"

# ---------------------------------------------------------------------------------------------------------------------
# 3. What goes into the image, and the cache key over all of it.

# resolve a program name or path to the real file on the host (ldd without its wrapper script, which is slow to spawn)
host_bin() { local p; p=$(command -v "$1" 2>/dev/null) || return 1; readlink -f "$p"; }

declare -A FILES=()       # guest path -> host file to copy
BIN_LIST=()
add_with_libs() {         # add_with_libs <host file> <guest path>
  local src=$1 dst=$2 lib
  FILES[$dst]=$src
  while read -r lib; do
    if [ -n "$lib" ] && [ -z "${FILES[$lib]:-}" ]; then FILES[$lib]=$(readlink -f "$lib"); fi
  done < <(LC_ALL=C LD_TRACE_LOADED_OBJECTS=1 /lib64/ld-linux-x86-64.so.2 "$src" 2>/dev/null | grep -o '/[^ ]*' || true)
}
NODE_BIN=$(host_bin node)
add_with_libs "$NODE_BIN" /usr/bin/node
BIN_LIST+=(/usr/bin/node)
for b in $REQUIRED_BINS $OPTIONAL_BINS; do
  [ "$b" = node ] && continue
  if p=$(host_bin "$b"); then
    add_with_libs "$p" "/usr/sbin/$b"; BIN_LIST+=("/usr/sbin/$b")
  else
    case " $REQUIRED_BINS " in *" $b "*) die "required program $b not found on the host";; esac
    log "optional program $b not on the host; skipped"
  fi
done
for l in $EXTRA_LIBS; do
  # awk reads everything (no early exit): ldconfig must not die of SIGPIPE, which pipefail would turn into a failure
  p=$(LC_ALL=C ldconfig -p 2>/dev/null | awk -v n="$l" '$1 == n && /x86-64/ && !found { print $NF; found = 1 }')
  if [ -n "$p" ] && [ -e "$p" ]; then FILES[$p]=$(readlink -f "$p"); fi
done
if [ -f /etc/mke2fs.conf ]; then FILES[/etc/mke2fs.conf]=/etc/mke2fs.conf; fi

KEY=$(
  {
    echo "kernel $KVER $(stat -c '%s %Y' "$VMLINUZ")"
    echo "modules $OPTIONAL_MODULES_FIRST | $REQUIRED_MODULES"
    sha256sum "$HERE/build-image.sh" "$HERE/init" | cut -d' ' -f1
    SORTED=$(printf '%s\n' "${!FILES[@]}" | LC_ALL=C sort)
    echo "$SORTED"
    for dst in $SORTED; do printf '%s\0' "${FILES[$dst]}"; done | xargs -0 stat -L -c '%n %s %Y'
  } | sha256sum | cut -c1-16
)
IMG=$VM_DIR/images/$KVER-$KEY

if [ -f "$IMG/.complete" ]; then
  touch "$IMG/.complete"   # recently used: keeps it out of the pruning below
  log "cached image $IMG"
  echo "$IMG"
  exit 0
fi

# ---------------------------------------------------------------------------------------------------------------------
# 4. Build into a temporary directory, then rename into place.

log "building image $KVER-$KEY"
STAGE=$(mktemp -d "$VM_DIR/images/.build-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc,proc,sys,dev,tmp,run,mnt,root,host,addon,scratch,modules}
# merged-/usr layout like the host, so the paths ldd reported resolve unchanged
ln -s usr/bin "$ROOT/bin"; ln -s usr/sbin "$ROOT/sbin"; ln -s usr/lib "$ROOT/lib"; ln -s usr/lib64 "$ROOT/lib64"
cp /bin/busybox "$ROOT/usr/bin/busybox"
ln -s busybox "$ROOT/usr/bin/sh"
for dst in "${!FILES[@]}"; do
  mkdir -p "$ROOT$(dirname "$dst")"
  cp -L "${FILES[$dst]}" "$ROOT$dst"
done
ln -s mke2fs "$ROOT/usr/sbin/mkfs.ext4"   # mke2fs picks the fs type from argv[0]
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\n' > "$ROOT/etc/group"
install -m 0755 "$HERE/init" "$ROOT/init"
# The kernel opens /dev/console before running /init; devtmpfs is mounted over /dev only later.
if [ "$(id -u)" = 0 ]; then mknod -m 0600 "$ROOT/dev/console" c 5 1; fi

# Kernel modules. The host needs no kmod: each .ko names its dependencies in its .modinfo "depends=" string.
declare -A KO=() BUILTIN=() SEEN=()
while IFS= read -r f; do
  b=${f##*/}; b=${b%%.ko*}; KO[${b//-/_}]=$f
done < <(find "$MODDIR/kernel" \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \))
if [ -f "$MODDIR/modules.builtin" ]; then
  while IFS= read -r f; do b=${f##*/}; b=${b%.ko}; BUILTIN[${b//-/_}]=1; done < "$MODDIR/modules.builtin"
fi

plain_ko() {   # plain_ko <src> <dst>: copy, decompressing when the package ships compressed modules
  case $1 in
    *.ko) cp "$1" "$2" ;;
    *.ko.xz) command -v xz >/dev/null || apt_install xz-utils; xz -dc "$1" > "$2" ;;
    *.ko.zst) command -v zstd >/dev/null || apt_install zstd; zstd -qdc "$1" > "$2" ;;
    *.ko.gz) gzip -dc "$1" > "$2" ;;
  esac
}

: > "$ROOT/modules/order"
: > "$STAGE/modules.txt"
resolve() {    # resolve <module> <req|opt>
  local k=${1//-/_} kind=$2 f deps d
  [ -n "${SEEN[$k]:-}" ] && return 0
  SEEN[$k]=1
  if [ -n "${BUILTIN[$k]:-}" ]; then echo "$k built-in" >> "$STAGE/modules.txt"; return 0; fi
  f=${KO[$k]:-}
  if [ -z "$f" ]; then
    [ "$kind" = req ] && die "module $1 is neither built into $KVER nor shipped as a module"
    echo "$k unavailable (optional)" >> "$STAGE/modules.txt"
    return 0
  fi
  plain_ko "$f" "$ROOT/modules/$k.ko"
  deps=$(grep -a -o -m1 'depends=[A-Za-z0-9_,-]*' "$ROOT/modules/$k.ko" | head -1 | sed 's/^depends=//')
  for d in ${deps//,/ }; do resolve "$d" "$kind"; done
  echo "$k.ko $kind" >> "$ROOT/modules/order"
  echo "$k module ($kind) ${f#"$MODDIR"/}" >> "$STAGE/modules.txt"
}
for m in $OPTIONAL_MODULES_FIRST; do resolve "$m" opt; done
for m in $REQUIRED_MODULES; do resolve "$m" req; done

echo "$KVER" > "$ROOT/etc/vmtest-kernel"
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) > "$STAGE/initramfs.cpio"
cp "$VMLINUZ" "$STAGE/vmlinuz"
echo "$KVER" > "$STAGE/kernel-release"
{
  echo "kernel $KVER"
  echo "key $KEY"
  echo "node $("$NODE_BIN" --version) $NODE_BIN"
  for dst in $(printf '%s\n' "${!FILES[@]}" | LC_ALL=C sort); do echo "$dst <- ${FILES[$dst]}"; done
} > "$STAGE/manifest.txt"
rm -rf "$ROOT"
touch "$STAGE/.complete"
chmod 0755 "$STAGE"
rm -rf "$IMG"
mv "$STAGE" "$IMG"
trap - EXIT
log "built $IMG ($(du -sh "$IMG/initramfs.cpio" | cut -f1) initramfs; modules: $(awk '{printf "%s ", $1}' "$IMG/modules.txt"))"

# Keep the three most recently used images; older ones belong to changed inputs.
find "$VM_DIR/images" -mindepth 2 -maxdepth 2 -name .complete -printf '%T@ %h\n' | sort -rn | tail -n +4 |
  while read -r _ old; do log "pruning old image $old"; rm -rf "$old"; done

echo "$IMG"
