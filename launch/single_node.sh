#!/usr/bin/env bash
# The main job: set up, then train SqueezeNet (small-image variant) on Fashion-MNIST with 2 MPI
# ranks on this node, evaluate on the test set and print the test accuracy.
# Usage: launch/single_node.sh [extra train flags, e.g. --epochs 3]
# Environment: NP (ranks, default 2), RUN_DIR (default runs/fashion-mnist).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/launch/setup.sh"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
NP="${NP:-2}"
RUN_DIR="${RUN_DIR:-$ROOT/runs/fashion-mnist}"
mkdir -p "$RUN_DIR"
MPI_FLAGS=(-np "$NP")
[[ $(id -u) -eq 0 ]] && MPI_FLAGS+=(--allow-run-as-root)
(( NP > $(nproc) )) && MPI_FLAGS+=(--oversubscribe)

# A live progress line on a terminal; plain lines when the output goes to a file (mpirun gives
# the ranks a pty either way, so the rank cannot tell by itself).
PROGRESS=plain
[[ -t 1 ]] && PROGRESS=live
start=$(date +%s)
mpirun "${MPI_FLAGS[@]}" "$BUILD_DIR/firetrain" train --config "$ROOT/launch/fashion_mnist.cfg" \
  --data "$ROOT/datasets/fashion-mnist-train.h5" --val "$ROOT/datasets/fashion-mnist-test.h5" \
  --checkpoint-dir "$RUN_DIR" --metrics "$RUN_DIR/metrics.csv" --progress "$PROGRESS" "$@"
ckpt=$(ls -1v "$RUN_DIR"/ckpt_*.h5 | tail -n 1)
mpirun "${MPI_FLAGS[@]}" "$BUILD_DIR/firetrain" eval --weights "$ckpt" \
  --data "$ROOT/datasets/fashion-mnist-test.h5"
echo "single_node: training + evaluation took $(( $(date +%s) - start )) s; checkpoint $ckpt"
