#!/usr/bin/env bash
# Training-step throughput of firetrain vs PyTorch (../shared/peers/torch_step.py
# --channels_last, PyTorch 1.13 + oneDNN), measured in the same run, same threads, same batch.
# Prints one row per configuration with the ratio (firetrain img/s / PyTorch img/s) and the
# peak RSS of both processes. Runs each side REPEATS times, alternating, and reports medians.
# squeezenet_small (the Fashion-MNIST model) runs against bench/torch_small_step.py, its PyTorch
# twin: SIZE=28 CHANNELS=1 CLASSES=10 THREADS=1 bench/step_vs_torch.sh squeezenet_small
# Usage: bench/step_vs_torch.sh [ARCH...]   env: BATCH (32) SIZE (224) THREADS (2) STEPS (5)
#        REPEATS (3) PEER (path of torch_step.py) CLASSES (1000) CHANNELS (3) PRECISION (fp32|bf16)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${FT:-$ROOT/build/firetrain}"
PEER="${PEER:-$ROOT/../shared/peers/torch_step.py}"
BATCH="${BATCH:-32}" SIZE="${SIZE:-224}" THREADS="${THREADS:-2}" STEPS="${STEPS:-5}"
REPEATS="${REPEATS:-3}" CLASSES="${CLASSES:-1000}" CHANNELS="${CHANNELS:-3}"
PRECISION="${PRECISION:-fp32}"   # fp32, or bf16: firetrain --precision bf16 vs the peer's --bf16 autocast
case $PRECISION in
  fp32) PEER_PREC=() ;;
  bf16) PEER_PREC=(--bf16) ;;
  *) echo "step_vs_torch: PRECISION must be fp32 or bf16" >&2; exit 2 ;;
esac
ARCHS=("$@")
((${#ARCHS[@]})) || ARCHS=(squeezenet1_0 squeezenet1_1)
PY=/usr/bin/python3

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

printf "# firetrain vs PyTorch: one training step (fwd+loss+bwd+SGD), %s, %d threads, batch %d, %dx%d, median of %d runs x %d steps\n" \
  "$PRECISION" "$THREADS" "$BATCH" "$SIZE" "$SIZE" "$REPEATS" "$STEPS"
printf "# %-15s %10s %10s %10s %10s %7s %10s %10s %9s\n" arch ft_ms ft_img/s pt_ms pt_img/s ratio ft_rss_MB pt_rss_MB rss_ratio
for arch in "${ARCHS[@]}"; do
  : >"$tmp/ft"; : >"$tmp/pt"; : >"$tmp/ftr"; : >"$tmp/ptr"
  for ((i = 0; i < REPEATS; i++)); do
    /usr/bin/time -f "%M" -o "$tmp/t" "$FT" bench step --arch "$arch" --batch "$BATCH" --size "$SIZE" \
      --threads "$THREADS" --steps "$STEPS" --classes "$CLASSES" --channels "$CHANNELS" --precision "$PRECISION" >"$tmp/o"
    awk '!/^#/ {print $5}' "$tmp/o" >>"$tmp/ft"
    echo $(( $(cat "$tmp/t") / 1024 )) >>"$tmp/ftr"
    if [[ $arch == squeezenet_small ]]; then  # its PyTorch twin, written next to this script
      /usr/bin/time -f "%M" -o "$tmp/t" $PY "$ROOT/bench/torch_small_step.py" --batch "$BATCH" \
        --size "$SIZE" --threads "$THREADS" --steps "$STEPS" --classes "$CLASSES" \
        --channels "$CHANNELS" --channels_last "${PEER_PREC[@]}" >"$tmp/o"
      sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$tmp/o" >>"$tmp/pt"
      echo $(( $(cat "$tmp/t") / 1024 )) >>"$tmp/ptr"
    elif [[ $CHANNELS == 3 ]]; then
      /usr/bin/time -f "%M" -o "$tmp/t" $PY "$PEER" --arch "$arch" --batch "$BATCH" --size "$SIZE" \
        --threads "$THREADS" --steps "$STEPS" --classes "$CLASSES" --channels_last "${PEER_PREC[@]}" >"$tmp/o"
      sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$tmp/o" >>"$tmp/pt"
      echo $(( $(cat "$tmp/t") / 1024 )) >>"$tmp/ptr"
    fi
  done
  ft=$(median <"$tmp/ft"); ftr=$(median <"$tmp/ftr")
  pt=$(median <"$tmp/pt" || true); ptr=$(median <"$tmp/ptr" || true)
  awk -v a="$arch" -v ft="$ft" -v pt="${pt:-0}" -v b="$BATCH" -v fr="$ftr" -v pr="${ptr:-0}" 'BEGIN {
    printf "  %-15s %10.1f %10.1f %10.1f %10.1f %7.2f %10d %10d %9.2f\n", a, ft, b*1000/ft,
      pt, (pt>0 ? b*1000/pt : 0), (pt>0 ? pt/ft : 0), fr, pr, (pr>0 ? fr/pr : 0) }'
done
echo "# ratio = PyTorch ms / firetrain ms (> 1: firetrain faster); rss_ratio = firetrain / PyTorch peak RSS"
