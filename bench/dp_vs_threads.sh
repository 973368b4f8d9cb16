#!/usr/bin/env bash
# Data parallelism vs threads on one node: the README's main job (launch/fashion_mnist.cfg,
# squeezenet_small on Fashion-MNIST, global batch 64) for STEPS steps as 2 ranks x 1 thread
# (mpirun -np 2) and as 1 rank x 2 threads, alternating, REPEATS times each; prints the medians
# of the training images/s that `firetrain train` reports on its last step line and the ratio (goal: >= 0.95, i.e. the
# data-parallel run loses at most 5% to one process using both cores).
# Usage: bench/dp_vs_threads.sh     env: FT (build/firetrain), STEPS (400), REPEATS (3), DATA
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${FT:-$ROOT/build/firetrain}"
DATA="${DATA:-$ROOT/datasets/fashion-mnist-train.h5}"
STEPS="${STEPS:-400}" REPEATS="${REPEATS:-3}"
[[ -f $DATA ]] || { echo "dp_vs_threads: no $DATA (run launch/setup.sh first)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(train --config "$ROOT/launch/fashion_mnist.cfg" --data "$DATA" --steps "$STEPS"
        --checkpoint-dir "$tmp/ck" --checkpoint-every 0 --log-every 100000)
rate() { sed -n 's/.* \([0-9.]*\) img\/s.*/\1/p' | tail -1; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for ((i = 0; i < REPEATS; i++)); do
  mpirun --allow-run-as-root --bind-to none -np 2 "$FT" "${common[@]}" --threads 1 2>&1 | rate >> "$tmp/dp"
  "$FT" "${common[@]}" --threads 2 2>&1 | rate >> "$tmp/th"
done
dp=$(median < "$tmp/dp") th=$(median < "$tmp/th")
echo "# firetrain: 2 ranks x 1 thread vs 1 rank x 2 threads, squeezenet_small on Fashion-MNIST, global batch 64, $STEPS steps, median of $REPEATS"
printf "# %-22s %10s   runs\n" "configuration" "img/s"
printf "  %-22s %10.1f   %s\n" "2 ranks x 1 thread" "$dp" "$(tr '\n' ' ' < "$tmp/dp")"
printf "  %-22s %10.1f   %s\n" "1 rank x 2 threads" "$th" "$(tr '\n' ' ' < "$tmp/th")"
awk -v a="$dp" -v b="$th" 'BEGIN { printf "# ratio (2 ranks / 1 rank) = %.3f (goal >= 0.95)\n", a / b }'
