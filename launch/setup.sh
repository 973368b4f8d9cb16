#!/usr/bin/env bash
# firetrain set-up: installs missing Debian packages (as root; otherwise prints the apt-get line
# and stops), configures and builds in Release under build/, and converts Fashion-MNIST to
# datasets/. Idempotent: a second run only rebuilds what changed.
# Usage: launch/setup.sh            (BUILD_DIR, BUILD_TYPE and JOBS may be set in the environment)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
BUILD_TYPE="${BUILD_TYPE:-Release}"
JOBS="${JOBS:-$(nproc)}"

PKGS=(build-essential cmake ninja-build pkg-config libopenmpi-dev openmpi-bin libhdf5-dev
      libdnnl-dev libgtest-dev zlib1g-dev libpng-dev libjpeg-dev dataset-fashion-mnist
      python3-opencv)  # python3-opencv: test-only (ctest onnx_parity_opencv), never a runtime dependency
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages. Run as root:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" >"$BUILD_DIR.cmake.log" 2>&1 \
  || { cat "$BUILD_DIR.cmake.log" >&2; exit 1; }
grep -E "^-- firetrain:" "$BUILD_DIR.cmake.log" || true
cmake --build "$BUILD_DIR" -j "$JOBS"

FMNIST_SRC=/usr/share/datasets/fashion-mnist
if [[ ! -f "$ROOT/datasets/fashion-mnist-train.h5" || ! -f "$ROOT/datasets/fashion-mnist-test.h5" ]]; then
  "$BUILD_DIR/firetrain" convert fashion-mnist "$FMNIST_SRC" "$ROOT/datasets"
fi
