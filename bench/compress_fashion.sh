#!/usr/bin/env bash
# Deep Compression of a converged squeezenet_small (the main job's 11-epoch checkpoint) on
# Fashion-MNIST: the table of docs/compress/fashion.md. For each row, `firetrain compress` (2 MPI
# ranks) prunes (conv1 kept), fine-tunes under the mask, quantizes (k-means codebooks) and, in the
# "_cb" rows, fine-tunes the shared centroids (the paper's update: centroid gradient = sum of its
# weights' gradients); then `firetrain eval` measures the FILE read back on the test set.
# The dense control trains the same source densely for the same number of steps, same lr and
# schedule. Every row has the same budget: FT_STEPS steps of global batch 64 after the source
# (fine-tuning steps + codebook steps). The source and dense-control figures are measured once
# (source.log, dense.log in OUTDIR; delete them to measure again), and so is each row
# (NAME.log, NAME.eval); table.md is rebuilt from them on every run.
# Usage: bench/compress_fashion.sh SRC.h5 [OUTDIR]
#   env: FT (build/firetrain), NP (2), LR (0.001), FT_STEPS (937 = 1 epoch), CB_STEPS (300),
#        ROWS (space-separated row names; default: all), TRAIN, TEST
#        (datasets/fashion-mnist-{train,test}.h5), FTZ_DIR (the compressed files; default OUTDIR)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${FT:-$ROOT/build/firetrain}"
SRC="${1:?usage: bench/compress_fashion.sh SRC.h5 [OUTDIR]}"
OUT="${2:-$ROOT/docs/compress/fashion}"
NP="${NP:-2}" LR="${LR:-0.001}" FT_STEPS="${FT_STEPS:-937}" CB_STEPS="${CB_STEPS:-300}"
TRAIN="${TRAIN:-$ROOT/datasets/fashion-mnist-train.h5}"
TEST="${TEST:-$ROOT/datasets/fashion-mnist-test.h5}"
for f in "$SRC" "$TRAIN" "$TEST"; do
  [[ -f $f ]] || { echo "compress_fashion: no $f" >&2; exit 2; }
done
FTZ_DIR="${FTZ_DIR:-$OUT}"
mkdir -p "$OUT" "$FTZ_DIR"
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$NP")
SGD=(--batch 64 --lr "$LR" --lr-schedule poly --momentum 0.9 --weight-decay 5e-4 --dropout 0
     --threads 1 --progress plain --log-every 100)
top1() { sed -n 's/.*top-1 \([0-9.]*\) .*/\1/p' "$1" | tail -1; }

if [[ -z $(top1 "$OUT/source.log" 2>/dev/null) ]]; then
  echo "source: $SRC" > "$OUT/source.log"
  "${MPI[@]}" "$FT" eval --weights "$SRC" --data "$TEST" --threads 1 >> "$OUT/source.log" 2>&1
fi
src_top1=$(top1 "$OUT/source.log")

# Dense control: the same source, FT_STEPS dense steps, the same lr and schedule (one poly decay).
if [[ -z $(top1 "$OUT/dense.log" 2>/dev/null) ]]; then
  "${MPI[@]}" "$FT" train --weights "$SRC" --data "$TRAIN" --steps "$FT_STEPS" "${SGD[@]}" \
    --warmup-steps 0 --checkpoint-dir "$OUT/dense_ck" --keep-checkpoints 1 > "$OUT/dense.log" 2>&1
  "${MPI[@]}" "$FT" eval --weights "$OUT/dense_ck/ckpt_$FT_STEPS.h5" --data "$TEST" --threads 1 \
    >> "$OUT/dense.log" 2>&1
  rm -rf "$OUT/dense_ck"
fi
dense_top1=$(top1 "$OUT/dense.log")

# name | compress flags (fine-tuning steps + codebook steps = FT_STEPS)
FT_CB=$((FT_STEPS - CB_STEPS))
S50="--sparsity 0.5 --layer-sparsity features.0=0"
S40="--sparsity 0.4 --layer-sparsity features.0=0"
rows=(
  "s50_8bit|$S50 --prune-stages 3 --bits 8 --finetune-steps $FT_STEPS"
  "s50_8bit_cb|$S50 --prune-stages 3 --bits 8 --finetune-steps $FT_CB --codebook-steps $CB_STEPS"
  "s50_6bit|$S50 --prune-stages 3 --bits 6 --bias-bits 16 --finetune-steps $FT_STEPS"
  "s50_6bit_cb|$S50 --prune-stages 3 --bits 6 --bias-bits 16 --finetune-steps $FT_CB --codebook-steps $CB_STEPS"
  "s50_6bit_cb_1stage|$S50 --prune-stages 1 --bits 6 --bias-bits 16 --finetune-steps $FT_CB --codebook-steps $CB_STEPS"
  "s40_6bit_cb_1stage|$S40 --prune-stages 1 --bits 6 --bias-bits 16 --finetune-steps $FT_CB --codebook-steps $CB_STEPS"
)
table="$OUT/table.md"
{
  echo "| row | compress flags (+ --lr $LR poly per stage, batch 64, wd 5e-4, no dropout) | file (bytes) | ratio vs fp32 | top-1 (file read back) | vs source | vs dense control |"
  echo "|---|---|---|---|---|---|---|"
} > "$table"
for r in "${rows[@]}"; do
  name=${r%%|*} flags=${r#*|}
  [[ -z ${ROWS:-} || " $ROWS " == *" $name "* ]] || continue
  # A row whose $name.eval holds a measurement is not run again (delete it to re-measure).
  if [[ -z $(top1 "$OUT/$name.eval" 2>/dev/null) ]]; then
    # shellcheck disable=SC2086
    "${MPI[@]}" "$FT" compress --weights "$SRC" --data "$TRAIN" $flags "${SGD[@]}" \
      --out "$FTZ_DIR/$name.ftz" > "$OUT/$name.log" 2>&1
    "$FT" eval --weights "$FTZ_DIR/$name.ftz" --data "$TEST" --threads 2 > "$OUT/$name.eval" 2>&1
  fi
  grep -q '^bytes ' "$OUT/$name.eval" || echo "bytes $(stat -c %s "$FTZ_DIR/$name.ftz")" >> "$OUT/$name.eval"
  t=$(top1 "$OUT/$name.eval") bytes=$(sed -n 's/^bytes //p' "$OUT/$name.eval")
  awk -v n="$name" -v f="$flags" -v b="$bytes" -v t="$t" -v s="$src_top1" -v d="$dense_top1" 'BEGIN {
    printf "| %s | `%s` | %d = %.3f MB | %.1fx | %.4f | %+.2f | %+.2f |\n",
      n, f, b, b / 1e6, 2905896 / b, t, 100 * (t - s), 100 * (t - d) }' >> "$table"
done
echo "# source $SRC: top-1 $src_top1; dense control ($FT_STEPS steps, lr $LR poly): top-1 $dense_top1"
cat "$table"
