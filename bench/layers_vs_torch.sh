#!/usr/bin/env bash
# Per-layer forward and backward time of one training step, firetrain vs PyTorch, side by side.
# firetrain: `firetrain bench layers` (each layer timed inside a real step, profiled steps
# alternating with unprofiled ones). PyTorch: bench/torch_layers.py (the same torchvision net,
# channels_last, PyTorch 1.13 + oneDNN, each row timed in situ by module and tensor hooks; see its
# header for what the backward windows bracket). Both run REPEATS times, alternating (firetrain,
# then PyTorch), same threads, batch and size; each cell is the median over the runs of each run's
# median over STEPS steps. Rows are firetrain's layers (conv1 = conv+ReLU, fireN = a Fire module,
# ...); the loss and the SGD update are in no row but in the whole-step line below the table.
# ratio = PyTorch ms / firetrain ms (> 1: firetrain faster); gap_ms = PyTorch (fwd+bwd) minus
# firetrain (fwd+bwd): the milliseconds of the step that row accounts for.
# Usage: bench/layers_vs_torch.sh [ARCH...]   (squeezenet1_0 and/or squeezenet1_1; default squeezenet1_0)
#   env: BATCH (32) SIZE (224) THREADS (2) STEPS (5) WARMUP (2) REPEATS (3) CLASSES (1000)
#        PRECISION (fp32|bf16: firetrain --precision bf16 vs torch.autocast bfloat16)
#        FT (firetrain binary, $ROOT/build/firetrain) NOTE (a free-text line for the header)
#        DEVICE (cpu|cuda: both sides on the GPU, each waiting for it after every layer)
#        PY (the Python with PyTorch, /usr/bin/python3; on a GPU machine its CUDA build)
# e.g. FT=build-main/firetrain PRECISION=bf16 bench/layers_vs_torch.sh | tee docs/bench/layers_vs_torch_bf16.txt
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${FT:-$ROOT/build/firetrain}"
BATCH="${BATCH:-32}" SIZE="${SIZE:-224}" THREADS="${THREADS:-2}" STEPS="${STEPS:-5}"
WARMUP="${WARMUP:-2}" REPEATS="${REPEATS:-3}" CLASSES="${CLASSES:-1000}"
PRECISION="${PRECISION:-fp32}"
case $PRECISION in
  fp32) PEER_PREC=() ;;
  bf16) PEER_PREC=(--bf16) ;;
  *) echo "layers_vs_torch: PRECISION must be fp32 or bf16" >&2; exit 2 ;;
esac
ARCHS=("$@")
((${#ARCHS[@]})) || ARCHS=(squeezenet1_0)
DEVICE="${DEVICE:-cpu}"
[[ $DEVICE == cpu || $DEVICE == cuda ]] || { echo "layers_vs_torch: DEVICE must be cpu or cuda" >&2; exit 2; }
read -r -a PY <<<"${PY:-/usr/bin/python3}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A private copy of the binary, so that a rebuild during the run cannot change what is measured.
cp "$FT" "$tmp/firetrain"
FTB="$tmp/firetrain"

ftver=$("$FTB" --version | sed -n '1p;2s/^ *build: //p' | paste -sd ' ' -)
ptver=$("${PY[@]}" -c 'import re, sys, torch
m = re.search(r"MKL-DNN (v[\d.]+)", torch.__config__.show())
gpu = ", " + torch.cuda.get_device_name() + ", cuDNN " + str(torch.backends.cudnn.version()) if sys.argv[1] == "cuda" else ""
print("PyTorch", torch.__version__, "(oneDNN", (m.group(1) if m else "?") + gpu + ")")' "$DEVICE")
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
printf "# firetrain vs PyTorch per layer: one training step, %s %s, %d thread(s), batch %d, %dx%d, median of %d alternating runs x %d steps\n" \
  "$DEVICE" "$PRECISION" "$THREADS" "$BATCH" "$SIZE" "$SIZE" "$REPEATS" "$STEPS"
printf "# machine: %s, %s CPUs; %s (sha256 %s); %s\n" "$cpu" "$(nproc)" "$ftver" \
  "$(sha256sum "$FTB" | cut -c1-12)" "$ptver"
printf "# load average at start: %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
[[ -n ${NOTE:-} ]] && printf "# note: %s\n" "$NOTE"

for arch in "${ARCHS[@]}"; do
  for ((i = 0; i < REPEATS; i++)); do
    "$FTB" bench layers --arch "$arch" --batch "$BATCH" --size "$SIZE" --threads "$THREADS" \
      --steps "$STEPS" --warmup "$WARMUP" --classes "$CLASSES" --precision "$PRECISION" \
      --device "$DEVICE" --out "$tmp/ft_$i.csv" >"$tmp/ft_$i.txt"
    "${PY[@]}" "$ROOT/bench/torch_layers.py" --arch "$arch" --batch "$BATCH" --size "$SIZE" \
      --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --classes "$CLASSES" \
      "${PEER_PREC[@]}" --device "$DEVICE" --csv "$tmp/pt_$i.csv" >"$tmp/pt_$i.txt"
  done
  # Join on the row name, medians over the runs, print the table.
  "${PY[@]}" - "$tmp" "$REPEATS" "$arch" <<'EOF'
import csv, re, statistics, sys
tmp, reps, arch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
med = statistics.median
def rows(path):
    with open(path) as f:
        return {r["layer"]: (float(r["fwd_ms"]), float(r["bwd_ms"])) for r in csv.DictReader(f)}
def grab(path, pattern):
    m = re.search(pattern, open(path).read())
    return float(m.group(1)) if m else float("nan")
ft = [rows(f"{tmp}/ft_{i}.csv") for i in range(reps)]
pt = [rows(f"{tmp}/pt_{i}.csv") for i in range(reps)]
names = list(ft[0])
if names != list(pt[0]):
    sys.exit(f"layers_vs_torch: row names differ:\n firetrain {names}\n torch     {list(pt[0])}")
cell = lambda runs, name, k: med(r[name][k] for r in runs)
print(f"# {arch}")
print(f"# {'layer':<26} {'ft_fwd_ms':>9} {'pt_fwd_ms':>9} {'fwd_ratio':>9} {'ft_bwd_ms':>9} "
      f"{'pt_bwd_ms':>9} {'bwd_ratio':>9} {'gap_ms':>8}")
tot = [0.0] * 4
for n in names:
    v = [cell(ft, n, 0), cell(pt, n, 0), cell(ft, n, 1), cell(pt, n, 1)]
    tot = [a + b for a, b in zip(tot, v)]
    r = lambda p, f: p / f if f > 0 else float("nan")
    print(f"  {n:<26} {v[0]:9.2f} {v[1]:9.2f} {r(v[1], v[0]):9.2f} {v[2]:9.2f} {v[3]:9.2f} "
          f"{r(v[3], v[2]):9.2f} {v[1] + v[3] - v[0] - v[2]:8.1f}")
print(f"  {'total':<26} {tot[0]:9.2f} {tot[1]:9.2f} {tot[1] / tot[0]:9.2f} {tot[2]:9.2f} {tot[3]:9.2f} "
      f"{tot[3] / tot[2]:9.2f} {tot[1] + tot[3] - tot[0] - tot[2]:8.1f}")
fs = [grab(f"{tmp}/ft_{i}.txt", r"whole step without profiling[^:]*: ([\d.]+) ms") for i in range(reps)]
ps = [grab(f"{tmp}/pt_{i}.txt", r"step_ms=([\d.]+)") for i in range(reps)]
ph = [grab(f"{tmp}/pt_{i}.txt", r"hooked_step_ms=([\d.]+)") for i in range(reps)]
print(f"# whole step without profiling (fwd+loss+bwd+SGD), median: firetrain {med(fs):.1f} ms, "
      f"PyTorch {med(ps):.1f} ms, ratio {med(ps) / med(fs):.2f}")
print(f"# layer sums per run (fwd+bwd ms): firetrain " +
      " ".join(f"{sum(a + b for a, b in r.values()):.0f}" for r in ft) + ", PyTorch " +
      " ".join(f"{sum(a + b for a, b in r.values()):.0f}" for r in pt) +
      f"; PyTorch step with hooks {med(ph):.1f} ms ({(med(ph) / med(ps) - 1) * 100:+.1f}% vs without)")
chk = [re.search(r"check: (\d+)/(\d+) parameter.*; (\d+) of (\d+) hooked", open(f"{tmp}/pt_{i}.txt").read())
       for i in range(reps)]
ins, tot, bad, steps = (sum(int(c.group(k)) for c in chk) for k in (1, 2, 3, 4))
print(f"# PyTorch backward attribution check, all runs: {ins}/{tot} parameter gradients accumulated "
      f"inside their layer's window; {bad}/{steps} hooked steps with windows out of order")
EOF
done
printf "# load average at end: %s\n" "$(cut -d' ' -f1-3 /proc/loadavg)"
echo "# ratio = PyTorch ms / firetrain ms (> 1: firetrain faster); gap_ms = PyTorch minus firetrain, fwd+bwd"
