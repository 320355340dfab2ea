#!/usr/bin/env bash
# Installs every build and test dependency from Debian's archive (only what is
# missing, so a second run touches nothing), then configures and builds vlm in
# ./build (Release). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  cmake gcc make pkg-config        # toolchain
  libopenblas-dev libopenblas0-openmp  # f32 GEMM (the OpenMP build is loaded at run time)
  libdnnl-dev                      # bf16 GEMM (oneDNN)
  libhdf5-dev                      # datasets
  libcjson-dev                     # JSON: configs, safetensors headers, tokenizer.json
  libstb-dev                       # image decode/encode
  zlib1g-dev                       # gzip: the Fashion-MNIST idx files
  dataset-fashion-mnist            # the default run's data
  gnuplot-nox                      # scripts/plot.sh
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
