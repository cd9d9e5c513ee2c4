#!/usr/bin/env bash
# Builds (once) the benchmark data of `npm run bench`, cached outside the repo so every later run and every
# checkout on the machine reuses it:
#
#   L1.tar  Debian bookworm minbase rootfs (debootstrap, via test/fixtures/debian-rootfs.sh), ~6,700 entries
#   L2.tar  what `apt-get install python3 ca-certificates` changes on top of L1, plus deliberate deletions: file
#           whiteouts (apt lists, /etc/motd), a directory whiteout, an opaque directory (overlay upper dir turned
#           into OCI whiteouts by graphdriver's own exportUpper, so it is exactly what a registry would hold)
#   L3.tar  a small layer (50 added files, a modified and a deleted file)
#   small.tar   a node_modules-like tree of ~30,000 small files in ~3,000 directories (many-small-files case)
#   big.tar     one 1 GiB file (streaming / throughput case)
#   image.tar       `docker save` archive of L1+L2+L3 (skopeo), tag bench/test:l123
#   image-l1.tar    `docker save` archive of L1 alone, tag bench/test:l1
#   oci/            OCI image layout of the same (tags l1, l12, l123), for umoci and skopeo
#   blob16m         16 MiB of random bytes, used by the standard container edit (mutate.sh)
#
#   bash bench/data/build.sh          -> prints the data directory
#
# Needs root, debootstrap, skopeo and the Debian mirror (apt works here). Built under a temporary name and
# renamed into place, so an interrupted run never leaves half-built data behind.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DATA=${GRAPHDRIVER_BENCH_DATA:-/var/tmp/graphdriver-bench}
STAMP=$DATA/.done-v1
log() { printf 'bench-data: %s\n' "$*" >&2; }

if [ -f "$STAMP" ]; then echo "$DATA"; exit 0; fi
[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
mkdir -p "$DATA"
exec 9>"$DATA/.lock"; flock 9
if [ -f "$STAMP" ]; then echo "$DATA"; exit 0; fi

for tool in skopeo debootstrap; do
  command -v $tool >/dev/null || { log "installing $tool"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $tool >/dev/null; }
done

L1=$(bash "$REPO/test/fixtures/debian-rootfs.sh")
ROOTFS=$(dirname "$L1")/rootfs
W=$DATA/.work; rm -rf "$W"; mkdir -p "$W"
cleanup() { umount -R "$W/l2/merged" 2>/dev/null || true; }
trap cleanup EXIT

cp "$L1" "$W/L1.tar"

# ---- L2: apt-get install in an overlay over the rootfs; the upper dir is the layer
U=$W/l2; mkdir -p $U/upper $U/work $U/merged
mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$U/upper,workdir=$U/work" $U/merged
M=$U/merged
mount -t proc proc $M/proc; mount --bind /dev $M/dev
cp /etc/resolv.conf $M/etc/resolv.conf 2>/dev/null || true
MIRROR=${MIRROR:-$(grep -rhoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' | grep -E 'debian' | grep -v security | head -1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
echo "deb $MIRROR bookworm main" > $M/etc/apt/sources.list
chroot $M /bin/sh -ec '
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3 ca-certificates >/dev/null
  apt-get clean; rm -rf /var/lib/apt/lists/*
  rm -f /etc/motd
  rm -rf /usr/share/doc/debconf
  rm -rf /usr/share/common-licenses && mkdir /usr/share/common-licenses && echo mine > /usr/share/common-licenses/LICENSE
  ln -sf /usr/bin/python3 /usr/local/bin/py
'
umount $M/proc $M/dev; umount $M
# The upper dir holds overlay whiteouts (char 0/0) and opaque xattrs: export it as an OCI layer tar with our own
# exportUpper (PAX, aufs/OCI whiteouts), compiled on the fly from this checkout.
(cd "$REPO" && npx tsc -p bench/tsconfig.json --outDir "$W/js" >/dev/null) || true  # type errors elsewhere do not stop emit
[ -f "$W/js/lib/archive/diff.js" ] || { log "could not compile lib/archive"; exit 1; }
GRAPHDRIVER_ADDON=${GRAPHDRIVER_ADDON:-$REPO/build/Release/graphdriver.node} node -e '
  const { exportUpper } = require(process.argv[1] + "/lib/archive/diff");
  const fs = require("fs"); const { pipeline } = require("stream/promises");
  (async () => { await pipeline(await exportUpper(process.argv[2], "overlay"), fs.createWriteStream(process.argv[3])); })()
    .catch((e) => { console.error(e); process.exit(1); });
' "$W/js" "$U/upper" "$W/L2.tar"
rm -rf "$U" "$W/js"

# ---- L3: small edit
S3=$W/l3; mkdir -p $S3/app $S3/etc
printf 'print("hello")\n' > $S3/app/hello.py
for i in $(seq 1 50); do echo "file $i" > $S3/app/f$i.txt; done
echo bench-test > $S3/etc/hostname
: > $S3/etc/.wh.issue.net
tar --numeric-owner --owner=0 --group=0 -C $S3 -cf $W/L3.tar .
rm -rf $S3

# ---- many small files: 3,000 packages x 10 files (sizes 100 B - 8 KiB), like a node_modules tree
python3 - "$W/small.tar" <<'PY'
import io, random, sys, tarfile
rnd = random.Random(42)
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:
    def add_dir(name):
        ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 1700000000; t.addfile(ti)
    add_dir('app'); add_dir('app/node_modules')
    for p in range(3000):
        d = f'app/node_modules/pkg-{p:04d}'
        add_dir(d); add_dir(d + '/lib')
        for f in range(10):
            size = rnd.choice([100, 300, 900, 2000, 4000, 8000])
            data = bytes(rnd.getrandbits(8) for _ in range(64)) * (size // 64 + 1)
            ti = tarfile.TarInfo(f'{d}/lib/file{f}.js' if f else f'{d}/package.json')
            ti.size = size; ti.mode = 0o644; ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(data[:size]))
PY

# ---- one 1 GiB file
python3 - "$W/big.tar" <<'PY'
import os, sys, tarfile
class Rand:
    def __init__(self, n): self.left = n; self.block = os.urandom(1 << 20)
    def read(self, n):
        n = min(n, self.left); self.left -= n
        return (self.block * (n // len(self.block) + 1))[:n]
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:
    ti = tarfile.TarInfo('data'); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 1700000000; t.addfile(ti)
    ti = tarfile.TarInfo('data/big.bin'); ti.size = 1 << 30; ti.mode = 0o644; ti.mtime = 1700000000
    t.addfile(ti, Rand(1 << 30))
PY

head -c 16777216 /dev/urandom > $W/blob16m

# ---- OCI layout (uncompressed layers) and docker-save archives
O=$W/oci; mkdir -p $O/blobs/sha256
echo '{"imageLayoutVersion":"1.0.0"}' > $O/oci-layout
declare -A D S
for l in L1 L2 L3; do
  d=$(sha256sum $W/$l.tar | cut -d' ' -f1); D[$l]=$d; S[$l]=$(stat -c %s $W/$l.tar)
  ln $W/$l.tar $O/blobs/sha256/$d
done
blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" $O/blobs/sha256/$d; echo "$d $(stat -c %s $O/blobs/sha256/$d)"; }
manifests=""
mk() { # tag layers...
  local tag=$1; shift; local diffids="" lays="" hist="" sep=""
  for l in "$@"; do
    diffids+="$sep\"sha256:${D[$l]}\""
    lays+="$sep{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:${D[$l]}\",\"size\":${S[$l]}}"
    hist+="$sep{\"created\":\"2025-01-01T00:00:00Z\",\"created_by\":\"$l\"}"; sep=","
  done
  printf '{"created":"2025-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' "$diffids" "$hist" > $W/cfg.json
  read -r cd cs < <(blob $W/cfg.json)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$cd" "$cs" "$lays" > $W/man.json
  read -r md ms < <(blob $W/man.json)
  manifests+="${manifests:+,}{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$md\",\"size\":$ms,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$tag\"}}"
}
mk l1 L1; mk l12 L1 L2; mk l123 L1 L2 L3
printf '{"schemaVersion":2,"manifests":[%s]}' "$manifests" > $O/index.json
skopeo copy -q oci:$O:l123 docker-archive:$W/image.tar:bench/test:l123
skopeo copy -q oci:$O:l1 docker-archive:$W/image-l1.tar:bench/test:l1

{
  for l in L1 L2 L3 small big; do
    n=$(tar -tf $W/$l.tar | wc -l); wh=$(tar -tf $W/$l.tar | grep -c '\.wh\.' || true)
    echo "$l entries=$n whiteouts=$wh bytes=$(stat -c %s $W/$l.tar)"
  done
} > $W/stats.txt
cat $W/stats.txt >&2

for f in "$W"/*; do rm -rf "$DATA/$(basename "$f")"; mv "$f" "$DATA/"; done
rmdir "$W"
date -u +%FT%TZ > "$STAMP"
echo "$DATA"
