#!/usr/bin/env bash
# The test command: installs and builds (scripts/setup.sh), runs the whole
# CTest suite, then rebuilds with AddressSanitizer + UBSan in ./build-asan and
# runs the library tests there. Exit code = verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$jobs"

# -O1 keeps the sanitized gradient checks fast enough; leaks are reported too.
cmake -S . -B build-asan -DVLM_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g"
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs" -L "autograd|nn|data|optim|train|infer"
