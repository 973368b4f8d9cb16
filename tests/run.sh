#!/usr/bin/env bash
# Sets up (packages, Release build, Fashion-MNIST conversion) and runs the whole test suite,
# MPI tests included. .ci/run calls exactly this.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/launch/setup.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "${BUILD_DIR:-$ROOT/build}"
ctest --output-on-failure -j "$(nproc)" "$@"
