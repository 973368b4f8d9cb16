#!/usr/bin/env bash
# Where a GPU training step's convolution time goes: runs `firetrain bench step --device cuda`
# with FT_CONV_DEBUG=1 (every cuDNN algorithm search printed with cuDNN's own timing of each
# algorithm on the real buffers) and prints, per convolution and direction, the algorithm
# firetrain chose and its time next to the fastest one cuDNN timed (any math, any
# determinism), with the sums over the step. Then times the whole step with the default
# choice and with FT_CUDNN_DETERMINISTIC=0 (the fastest algorithm, deterministic or not).
# Cases: fp32 with the zero-copy Fire concat (cuBLAS GEMMs, not timed by the search), fp32
# with FT_CONV_TWO_PART=copy (every convolution through cuDNN, so all are in the table), bf16.
#
# Usage: bench/gpu_conv_diag.sh [FIRETRAIN]   (default build-gpu/firetrain; env ARCH, BATCH)
# Run by tests/gpu_check.sh with EXTRA=bench/gpu_conv_diag.sh (after its build, with its
# environment), or alone on a GPU machine with a CUDA build.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${1:-${FT:-$ROOT/build-gpu/firetrain}}"
ARCH="${ARCH:-squeezenet1_0}" BATCH="${BATCH:-256}"
LOGDIR="${LOGS:-$(mktemp -d)}"
PY=(python3)
[[ -n ${PYENV_CMD:-} ]] && read -r -a PY <<<"$PYENV_CMD python3"
step() {  # NAME PREC ENV...: one bench step run; its log in $LOGDIR/diag_NAME.log; prints median ms
  local name=$1 prec=$2
  shift 2
  timeout -k 10 120 env "$@" "$FT" bench step --device cuda --precision "$prec" --arch "$ARCH" --batch "$BATCH" --size 224 \
    --steps 5 --warmup 2 >"$LOGDIR/diag_$name.log" 2>&1
  awk -v a="$ARCH" '$1 == a && NF >= 11 { v = $5 " ms (fwd " $8 ", bwd " $9 ")" } END { print (v == "" ? "FAILED" : v) }' \
    "$LOGDIR/diag_$name.log"
}
table() {  # NAME: the per-convolution table of a FT_CONV_DEBUG log
  "${PY[@]}" - "$LOGDIR/diag_$1.log" <<'EOF'
import re, sys
rows, tot = [], [0.0, 0.0]
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"firetrain: conv (\S+) (forward|backward-data|backward-filter) (.*?): chose #(\d+) of \[(.*)\]$", line.strip())
    if not m:
        continue
    dt, d, shape, chosen, rest = m.group(1), m.group(2), m.group(3), int(m.group(4)), m.group(5)
    algos = []
    for a in rest.split("; "):
        am = re.match(r"#(\d+) algo (\d+): (\S+), ([0-9.]+) ms, ([0-9.]+) MB, (\S+) math, (\S+)", a)
        if am and am.group(3) == "CUDNN_STATUS_SUCCESS":
            algos.append((int(am.group(1)), int(am.group(2)), float(am.group(4)), am.group(6), am.group(7)))
    ch = [a for a in algos if a[0] == chosen]
    if not ch or not algos:
        continue
    best = min(algos, key=lambda a: a[2])
    c = ch[0]
    tot[0] += c[2]; tot[1] += best[2]
    rows.append("  %-4s %-15s %-44s algo %d %8.3f ms  %-17s | fastest: algo %d %8.3f ms %s %s" % (
        dt, d, shape[:44], c[1], c[2], c[4], best[1], best[2], best[3], best[4]))
print("\n".join(rows))
print("  sum over the step's convolutions: chosen %.2f ms, fastest timed %.2f ms" % (tot[0], tot[1]))
EOF
}
echo "# $ARCH batch $BATCH 224x224: cuDNN algorithm choices (FT_CONV_DEBUG=1; times are cuDNN's search timings)"
for c in "fp32 fp32 FT_CONV_TWO_PART=gemm" "fp32_copy fp32 FT_CONV_TWO_PART=copy" "bf16 bf16 FT_CONV_TWO_PART=gemm"; do
  read -r name prec env1 <<<"$c"
  ms=$(step "$name" "$prec" "$env1" FT_CONV_DEBUG=1)
  echo "## $prec, $env1: step $ms (with the searches' first steps in the warm-up)"
  table "$name"
done
echo "# whole step, default choice vs FT_CUDNN_DETERMINISTIC=0 (median of 5 steps)"
for prec in fp32 bf16; do
  echo "  $prec default:                  $(step "${prec}_det" "$prec")"
  echo "  $prec FT_CUDNN_DETERMINISTIC=0: $(step "${prec}_nondet" "$prec" FT_CUDNN_DETERMINISTIC=0)"
done
echo "  fp32 FT_CONV_TWO_PART=copy FT_CUDNN_DETERMINISTIC=0: $(step fp32_copy_nondet fp32 FT_CONV_TWO_PART=copy FT_CUDNN_DETERMINISTIC=0)"
