#!/usr/bin/env bash
# Where a data-parallel step's time goes, SqueezeNet 1.0 vs AlexNet: `train --timeline` on 2
# ranks x 1 thread (one node over shared memory; or hosts, see MPIEXEC below), 224x224x3
# synthetic images, 1000 classes, per-rank batch BATCH, 1 MiB buckets; prints each run's
# per-rank table (medians over the recorded steps: step, forward, backward, time with a bucket
# in flight, its share inside backward, time in the reducer's ready() calls, and the wait after
# backward) and keeps the traces.
# Usage: bench/timeline_archs.sh [OUTDIR]   (traces: OUTDIR/timeline_<arch>.json; default a
#        temporary directory). Env: FT (build/firetrain), TOOL (build/tests/ft_fault_tool),
#        ARCHS ("squeezenet1_0 alexnet"), BATCH (16), STEPS (6: the first is not recorded),
#        RANKS (2), MPIEXEC (mpirun; e.g. "launch/netns_cluster.sh run --" for ranks on
#        simulated hosts over rate-limited TCP)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${FT:-$ROOT/build/firetrain}"
TOOL="${TOOL:-$ROOT/build/tests/ft_fault_tool}"
ARCHS="${ARCHS:-squeezenet1_0 alexnet}"
BATCH="${BATCH:-16}" STEPS="${STEPS:-6}" RANKS="${RANKS:-2}" MPIEXEC="${MPIEXEC:-mpirun}"
[[ -x $FT && -x $TOOL ]] || { echo "timeline_archs: build first (launch/setup.sh): need $FT and $TOOL" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OUT="${1:-$tmp}"
mkdir -p "$OUT"
n=$((BATCH * RANKS * STEPS))
"$TOOL" dataset "$tmp/d.h5" "$n" 224 3 1000 > /dev/null
echo "# $RANKS ranks x 1 thread, batch $BATCH per rank, 224x224x3, 1000 classes, 1 MiB buckets; $("$FT" --version | head -1)"
for arch in $ARCHS; do
  echo "## $arch"
  $MPIEXEC --allow-run-as-root --oversubscribe --bind-to none -np "$RANKS" "$FT" train \
    --arch "$arch" --data "$tmp/d.h5" --batch $((BATCH * RANKS)) --steps "$STEPS" --lr 0.001 \
    --dropout 0 --threads 1 --progress plain --log-every 1000 --timeline "$OUT/timeline_$arch.json" \
    --timeline-steps $((STEPS - 1)) > "$tmp/$arch.log" 2>&1 || { cat "$tmp/$arch.log"; exit 1; }
  grep "gradient all-reduce:" "$tmp/$arch.log"
  sed -n '/^timeline:/,/^# medians/p' "$tmp/$arch.log"
done
