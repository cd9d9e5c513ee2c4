#!/usr/bin/env bash
# `npm run test:vm [-- [node --test flags] [test/vm/guest/<file>.test.js ...]]`
#
# Boots Debian's kernel in qemu (software emulation) with the initramfs from build-image.sh, shares this checkout
# read-only into the guest over virtio-9p, runs the guest tests there with `node --test`, streams the console, and
# exits 0 only when the guest reported success. See README.md for the environment variables.
set -euo pipefail
shopt -s extglob

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
VM_DIR=${GRAPHDRIVER_VM_DIR:-/var/tmp/graphdriver-vm}
TIMEOUT=${GRAPHDRIVER_VM_TIMEOUT:-300}
MEM=${GRAPHDRIVER_VM_MEM:-2048}
SMP=${GRAPHDRIVER_VM_SMP:-2}
ACCEL=${GRAPHDRIVER_VM_ACCEL:-tcg}

now_us() { echo "${EPOCHREALTIME/./}"; }
secs() { local us=$1; printf '%d.%01d' $((us / 1000000)) $((us % 1000000 / 100000)); }
T0=$(now_us)

# Everything goes to stdout, so the order survives CI logs. Every way out prints one summary line starting "VM:".
harness_error() { echo "VM: HARNESS ERROR: $*"; exit 2; }

# ---- image
IMG_T0=$(now_us)
{ IMG=$(bash "$HERE/build-image.sh" 2>&3) || harness_error "build-image.sh failed"; } 3>&1
IMG_T=$(( $(now_us) - IMG_T0 ))
[ -f "$IMG/vmlinuz" ] && [ -f "$IMG/initramfs.cpio" ] || harness_error "no image in '$IMG'"
command -v qemu-system-x86_64 >/dev/null || harness_error "qemu-system-x86_64 is not installed"

# ---- addon: the checkout's node-gyp build unless GRAPHDRIVER_ADDON names another one
if [ -n "${GRAPHDRIVER_ADDON:-}" ]; then
  ADDON=$GRAPHDRIVER_ADDON
  [ -f "$ADDON" ] || harness_error "GRAPHDRIVER_ADDON=$ADDON does not exist"
else
  ADDON=$ROOT/build/Release/graphdriver.node
  if [ ! -f "$ADDON" ]; then
    echo "vm: $ADDON is missing; building the addon (node-gyp rebuild)"
    (cd "$ROOT" && npx --no-install node-gyp rebuild 2>&1) || harness_error "node-gyp rebuild failed"
  elif [ -n "$(find "$ROOT/native" "$ROOT/binding.gyp" -newer "$ADDON" -print -quit 2>/dev/null)" ]; then
    echo "vm: WARNING: $ADDON is older than the native sources (run npm run build)"
  fi
fi
ADDON=$(readlink -f "$ADDON")

# ---- compiled JS: the guest runs plain node, so the TypeScript the guest tests load (lib/, the conformance suite)
# is transpiled into node_modules/.cache/graphdriver-vm, which the guest sees through the checkout share
JS_T0=$(now_us)
node "$HERE/compile.js" >/dev/null || harness_error "compiling the TypeScript for the guest failed (test/vm/compile.js)"
JS_T=$(( $(now_us) - JS_T0 ))
SHARES=(-virtfs "local,path=$ROOT,mount_tag=host,security_model=none,readonly=on,multidevs=remap")
case $ADDON in
  "$ROOT"/*) GUEST_ADDON=/host/${ADDON#"$ROOT"/} ;;
  *)
    # outside the checkout: share just its directory as a second read-only export
    SHARES+=(-virtfs "local,path=$(dirname "$ADDON"),mount_tag=addon,security_model=none,readonly=on,multidevs=remap")
    GUEST_ADDON=/addon/$(basename "$ADDON")
    ;;
esac
case $GUEST_ADDON in *[[:space:]]*) harness_error "the addon path must not contain white space: $GUEST_ADDON" ;; esac

# ---- what the guest runs
b64() { printf '%s' "$1" | base64 -w0; }
APPEND="console=ttyS0 quiet panic=-1 oops=panic mitigations=off vmtest.addon=$GUEST_ADDON"
# Test files run side by side, one per guest CPU by default: they use separate pools, loop devices and directories,
# and the devicemapper suites spend much of their time waiting for the (emulated) kernel.
CONCURRENCY=${GRAPHDRIVER_VM_CONCURRENCY:-$SMP}
case $CONCURRENCY in ''|*[!0-9]*|0) harness_error "GRAPHDRIVER_VM_CONCURRENCY must be a positive number" ;; esac
APPEND+=" vmtest.concurrency=$CONCURRENCY"
if [ $# -gt 0 ]; then
  args=""
  for a in "$@"; do
    case $a in
      -*) ;;
      *)
        # test files are given relative to the current directory or the checkout, or absolute inside the checkout;
        # the guest sees the checkout at /host
        f=$a
        case $f in /*) ;; *) [ -e "$f" ] || f=$ROOT/$f ;; esac
        f=$(readlink -f "$f") && [ -f "$f" ] || harness_error "no such file: $a"
        case $f in "$ROOT"/*) a=${f#"$ROOT"/} ;; *) harness_error "$a is outside the checkout $ROOT" ;; esac
        ;;
    esac
    args+="$a"$'\n'
  done
  APPEND+=" vmtest.args=$(b64 "$args")"
fi
[ -n "${GRAPHDRIVER_VM_CMD:-}" ] && APPEND+=" vmtest.cmd=$(b64 "$GRAPHDRIVER_VM_CMD")"
[ -n "${GRAPHDRIVER_VM_ENV:-}" ] && APPEND+=" vmtest.env=$(b64 "$GRAPHDRIVER_VM_ENV")"
# x86 kernels keep the first 2048 bytes of the command line
[ ${#APPEND} -lt 2000 ] || harness_error "kernel command line too long (${#APPEND} bytes): pass fewer arguments"

case $ACCEL in
  tcg) CPU_ARGS=(-accel tcg -cpu max) ;;
  kvm) CPU_ARGS=(-accel kvm -cpu host) ;;
  *) harness_error "GRAPHDRIVER_VM_ACCEL must be tcg or kvm" ;;
esac
QEMU=(qemu-system-x86_64 "${CPU_ARGS[@]}" -m "$MEM" -smp "$SMP"
      -nographic -no-reboot -nodefaults -serial stdio
      -device isa-debug-exit,iobase=0xf4,iosize=0x04
      -kernel "$IMG/vmlinuz" -initrd "$IMG/initramfs.cpio" -append "$APPEND"
      "${SHARES[@]}")

mkdir -p "$VM_DIR/logs"
LOG=${GRAPHDRIVER_VM_LOG:-$(mktemp --suffix=.log "$VM_DIR/logs/console-XXXXXX")}
# keep the last 20 logs
find "$VM_DIR/logs" -maxdepth 1 -name 'console-*.log' -printf '%T@ %p\n' | sort -rn | tail -n +21 | cut -d' ' -f2- |
  xargs -r rm -f
echo "vm: image $IMG (kernel $(cat "$IMG/kernel-release"), $(secs "$IMG_T")s), addon $ADDON -> $GUEST_ADDON"
echo "vm: console log $LOG, timeout ${TIMEOUT}s"

# ---- boot. Console lines are shown with the seconds since qemu started and kept, with the same stamp, in $LOG.
Q0=$(now_us)
set +e
timeout --kill-after=10 "$TIMEOUT" "${QEMU[@]}" </dev/null 2>&1 |
  while IFS= read -r line || [ -n "$line" ]; do
    # no subshells in here: a fork per console line would make the stream lag behind the guest
    line=${line%$'\r'}
    line=${line//$'\e'[[]*([0-9;?])[A-Za-z]/}   # the firmware's terminal resets and colours
    line=${line//$'\e'c/}
    t=$(( ${EPOCHREALTIME/./} - Q0 ))
    printf -v stamp '%d.%01d' $((t / 1000000)) $((t % 1000000 / 100000))
    printf '[vm %6s] %s\n' "$stamp" "$line"
    printf '%s %s\n' "$stamp" "$line" >&3
  done 3>>"$LOG"
QRC=${PIPESTATUS[0]}
set -e
Q_T=$(( $(now_us) - Q0 ))

# ---- verdict: qemu's exit status from isa-debug-exit AND the guest's own VMTEST-RC line must agree
stamp_of() { awk -v pat="$1" 'index($0, pat) { print $1; exit }' "$LOG"; }
# node --test summary lines: "ℹ pass 3" from the spec reporter, "# pass 3" from the tap one
count_of() { sed -n "s/^[0-9.]* \(ℹ\|#\) $1 \([0-9][0-9]*\)\$/\2/p" "$LOG" | tail -1; }
GUEST_RC=$(sed -n 's/^[0-9.]* VMTEST-RC=\([0-9]*\)$/\1/p' "$LOG" | tail -1)
PASS=$(count_of pass); FAIL=$(count_of fail); CANC=$(count_of cancelled); SKIP=$(count_of skipped); TODO=$(count_of todo)
BOOT=$(stamp_of 'VMTEST: tests start'); DONE=$(stamp_of 'VMTEST: tests finished')

timing="image $(secs "$IMG_T")s, js $(secs "$JS_T")s"
[ -n "$BOOT" ] && timing+=", boot-to-tests ${BOOT}s"
[ -n "$BOOT" ] && [ -n "$DONE" ] && timing+=", tests $(awk -v a="$BOOT" -v b="$DONE" 'BEGIN { printf "%.1f", b - a }')s"
timing+=", qemu $(secs "$Q_T")s, total $(secs $(( $(now_us) - T0 )))s"

counts="${PASS:-0} passed, ${FAIL:-0} failed"
[ "${CANC:-0}" != 0 ] && counts+=", $CANC cancelled"
[ "${SKIP:-0}" != 0 ] && counts+=", $SKIP skipped"
[ "${TODO:-0}" != 0 ] && counts+=", $TODO todo"

if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
  echo "VM: $counts; TIMEOUT: killed after ${TIMEOUT}s ($timing; log $LOG)"
  exit 1
elif [ "$QRC" = 85 ] && [ "$GUEST_RC" = 0 ]; then
  if [ -z "$PASS" ] && [ -z "${GRAPHDRIVER_VM_CMD:-}" ]; then
    echo "VM: $counts; the guest passed but printed no node --test summary ($timing; log $LOG)"
    exit 1
  fi
  echo "VM: $counts ($timing)"
  exit 0
elif [ "$QRC" = 87 ]; then
  echo "VM: $counts; guest exit status ${GUEST_RC:-?} ($timing; log $LOG)"
  exit 1
else
  echo "VM: $counts; HARNESS ERROR: qemu exited with status $QRC without a guest verdict (guest rc ${GUEST_RC:-none}; $timing; log $LOG)"
  exit 2
fi
