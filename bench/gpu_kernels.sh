#!/usr/bin/env bash
# Per-kernel GPU time of one training step, measured by Nsight Compute (ncu): `firetrain bench
# step --device cuda` brackets its timed steps with cudaProfilerStart/Stop, so with
# --profile-from-start off ncu records the kernels of the timed step only (not the warm-up's
# cuDNN algorithm searches). One metric (gpu__time_duration.sum: each kernel's duration on the
# GPU, kernels serialized by the profiler), clocks as found (--clock-control none). Prints the
# kernels by total time (calls, total us, share), firetrain's own kernels (namespace ft::)
# against the libraries' (cuDNN, cuBLAS), and the kernels' sum next to the step's wall time
# without the profiler: the gap is launch overhead and host work between kernels.
#
# Usage: bench/gpu_kernels.sh [FIRETRAIN]   (default build-gpu/firetrain)
#   env: PREC (bf16), ARCH (squeezenet1_0), BATCH (256), TOP (25 rows), NCU (ncu), PY (python3)
# Run by tests/gpu_check.sh (into layers_gpu.txt), or alone on a machine with a GPU and ncu.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${1:-${FT:-$ROOT/build-gpu/firetrain}}"
PREC="${PREC:-bf16}" ARCH="${ARCH:-squeezenet1_0}" BATCH="${BATCH:-256}" TOP="${TOP:-25}"
read -r -a PY <<<"${PY:-python3}"
if [[ -z ${NCU:-} ]]; then  # on the PATH, else the toolkit's or a standalone install's
  NCU=$(command -v ncu || ls -d /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | tail -1)
fi
[[ -n $NCU ]] && command -v "$NCU" >/dev/null ||
  { echo "# gpu_kernels: no ncu (Nsight Compute) on this machine"; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
STEP=(bench step --device cuda --precision "$PREC" --arch "$ARCH" --batch "$BATCH" --size 224)
# The step's wall time without the profiler (median of 5), for the gap.
"$FT" "${STEP[@]}" --steps 5 --warmup 2 >"$tmp/plain.log" 2>&1 ||
  { echo "# gpu_kernels: firetrain bench step failed:"; tail -5 "$tmp/plain.log"; exit 1; }
"$NCU" --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
  --target-processes all -f -o "$tmp/prof" "$FT" "${STEP[@]}" --steps 1 --warmup 2 >"$tmp/ncu.log" 2>&1 ||
  { echo "# gpu_kernels: ncu failed:"; tail -8 "$tmp/ncu.log"; exit 1; }
"$NCU" --import "$tmp/prof.ncu-rep" --csv --page raw --print-units base --print-kernel-base demangled \
  --metrics gpu__time_duration.sum >"$tmp/raw.csv" 2>"$tmp/import.log" ||
  { echo "# gpu_kernels: ncu --import failed:"; tail -5 "$tmp/import.log"; exit 1; }
[[ -n ${KEEP_CSV:-} ]] && cp "$tmp/raw.csv" "$KEEP_CSV"
"${PY[@]}" - "$tmp/raw.csv" "$tmp/plain.log" "$ARCH" "$PREC" "$BATCH" "$TOP" <<'EOF'
import csv, re, sys
raw, plain, arch, prec, batch, top = sys.argv[1:7]
rows = list(csv.reader(open(raw, newline="")))
hdr = next((i for i, r in enumerate(rows) if "Kernel Name" in r), None)
if hdr is None:
    sys.exit("# gpu_kernels: no 'Kernel Name' column in ncu's CSV (" + str(rows[:2])[:300] + ")")
h = rows[hdr]
kn, dur = h.index("Kernel Name"), h.index("gpu__time_duration.sum")
scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}
unit = 1e-3  # --print-units base: nanoseconds
data = []
for r in rows[hdr + 1:]:
    if len(r) <= max(kn, dur):
        continue
    if r[dur] in scale:  # the units row
        unit = scale[r[dur]]
        continue
    try:
        us = float(r[dur].replace(",", "")) * unit
    except ValueError:
        continue
    # the name without its parameter list ("(anonymous namespace)" is part of the name)
    name = r[kn].replace("(anonymous namespace)", "{anon}").split("(")[0].strip()
    data.append((name, us))
if not data:
    sys.exit("# gpu_kernels: ncu recorded no kernel (was the capture range reached?)")
agg = {}
for name, us in data:
    n, t = agg.get(name, (0, 0.0))
    agg[name] = (n + 1, t + us)
total = sum(t for _, t in agg.values())
own = sum(t for k, (_, t) in agg.items() if k.startswith("ft::") or "ft::" in k.split("<")[0])
m = re.search(r"^\s*" + re.escape(arch) + r"\s+\d+\s+\d+\s+\d+\s+([\d.]+)", open(plain).read(), re.M)
wall = float(m.group(1)) * 1e3 if m else float("nan")
print(f"# {arch} {prec} batch {batch}: kernels of one timed training step (Nsight Compute, "
      f"gpu__time_duration, clocks as found)")
print(f"# {len(data)} kernel launches, {total / 1e3:.2f} ms of kernels; the step without the "
      f"profiler: {wall / 1e3:.2f} ms (median of 5), so {max(wall - total, 0) / 1e3:.2f} ms "
      f"({max(wall - total, 0) / wall * 100 if wall == wall and wall > 0 else float('nan'):.0f}%) "
      f"is not kernel time (launch gaps, host work, synchronizations)")
print(f"# firetrain's own kernels (ft::): {own / 1e3:.2f} ms ({own / total * 100:.0f}%); "
      f"libraries (cuDNN, cuBLAS, NCCL): {(total - own) / 1e3:.2f} ms ({(total - own) / total * 100:.0f}%)")
print(f"# {'calls':>5} {'total_us':>10} {'share':>6}  kernel")
for name, (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1])[: int(top)]:
    short = name if len(name) <= 110 else name[:107] + "..."
    print(f"  {n:5d} {t:10.1f} {t / total * 100:5.1f}%  {short}")
EOF
