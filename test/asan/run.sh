#!/usr/bin/env bash
# Builds native/ with AddressSanitizer + UndefinedBehaviorSanitizer (cmake-js, CMakeLists.txt) and runs the jest
# suites that exercise the addon against that build. node itself is not instrumented, so the sanitizer runtimes are
# preloaded; leak detection is off because V8 keeps allocations alive until exit by design.
set -euo pipefail
cd "$(dirname "$0")/../.."
npm run --silent build:asan >/dev/null
addon=$PWD/build-asan/Debug/graphdriver.node
[ -f "$addon" ] || { echo "ASan build did not produce $addon" >&2; exit 1; }
preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD=$preload
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export GRAPHDRIVER_ADDON=$addon
echo "ASan/UBSan run with $addon"
# The suites that drive the addon hardest: every native binding, and the archive engine on top of the batched
# primitives (hostile archives included). Pass other test paths to run those instead.
if [ $# -eq 0 ]; then set -- test/integration/native- test/integration/archive-; fi
npx jest --ci "$@" --selectProjects integration
