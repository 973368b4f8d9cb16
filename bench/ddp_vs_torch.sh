#!/usr/bin/env bash
# Data-parallel training vs PyTorch DistributedDataParallel on one node (CPU), in the same run:
#  * step throughput at 1 and 2 ranks, 1 thread per rank, synthetic data, the same per-rank
#    batch and image size: firetrain's `bench scaling` under `mpirun -np 2` (the trainer's step
#    and its bucketed reducer: 1 MiB buckets, MPI_Iallreduce overlapped with backward) against
#    ../shared/peers/torch_ddp.py (torchvision's model, channels_last, DDP over gloo, whose
#    25 MiB buckets also overlap with backward), alternating REPEATS times; medians, the
#    scaling efficiency of each (img/s at 2 ranks / (2 x img/s at 1 rank)) and the ratio;
#  * the all-reduce of the whole gradient alone, 2 ranks: firetrain's reducer and one
#    MPI_Allreduce of the same bytes (`bench comm`) against the peer's gloo all_reduce of a
#    flat tensor of all the parameters.
# Usage: bench/ddp_vs_torch.sh
# Env:   FT (build/firetrain), PEER (../shared/peers/torch_ddp.py), PY (/usr/bin/python3, with
#        python3-torch and python3-torchvision), ARCHS ("squeezenet1_0 squeezenet1_1"),
#        BATCH (16 per rank), SIZE (224), STEPS (4), REPEATS (3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="${FT:-$ROOT/build/firetrain}"
PEER="${PEER:-$ROOT/../shared/peers/torch_ddp.py}"
PY="${PY:-/usr/bin/python3}"
ARCHS="${ARCHS:-squeezenet1_0 squeezenet1_1}"
BATCH="${BATCH:-16}" SIZE="${SIZE:-224}" STEPS="${STEPS:-4}" REPEATS="${REPEATS:-3}"
[[ -x $FT ]] || { echo "ddp_vs_torch: no $FT (run launch/setup.sh first)" >&2; exit 2; }
[[ -f $PEER ]] || { echo "ddp_vs_torch: no peer script $PEER" >&2; exit 2; }
"$PY" -c 'import torch, torchvision' 2>/dev/null ||
  { echo "ddp_vs_torch: $PY lacks torch/torchvision (apt-get install python3-torch python3-torchvision)" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print 0}'; }
# The peer in its own session; once it has printed its result line (or exited, or after 15
# minutes) its whole process group is ended: with its output not on a terminal, a spawned rank
# of torch_ddp.py often does not exit after the result is printed (seen with PyTorch 1.13 on
# Debian 12), which would hang the benchmark.
run_peer() {
  local out=$1 i
  shift
  setsid "$PY" "$PEER" "$@" >"$out" 2>"$tmp/pt.err" &
  local pid=$!
  for ((i = 0; i < 900; i++)); do
    grep -qs global_img_per_s "$out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  sleep 1
  kill -- -"$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  grep -q global_img_per_s "$out" || { cat "$tmp/pt.err" >&2; echo "ddp_vs_torch: the peer printed no result" >&2; exit 1; }
}

for ((r = 0; r < REPEATS; r++)); do
  for arch in $ARCHS; do
    # firetrain: one invocation measures 1 rank, then 2 ranks (rows "arch ranks batch ...").
    mpirun --bind-to none -np 2 "$FT" bench scaling --models "$arch" --batch "$BATCH" \
      --size "$SIZE" --steps "$STEPS" --warmup 2 --threads 1 --fit-max-mb 1 --fit-repeats 1 \
      --links NVLink --plot "$tmp/plot.svg" >"$tmp/ft.out" 2>"$tmp/ft.err" ||
      { cat "$tmp/ft.err" >&2; exit 1; }
    awk -v a="$arch" '$1 == a && $2 == 1 {print $9}' "$tmp/ft.out" >>"$tmp/ft1.$arch"
    awk -v a="$arch" '$1 == a && $2 == 2 {print $9}' "$tmp/ft.out" >>"$tmp/ft2.$arch"
    # PyTorch DDP (gloo) at 1 and 2 processes.
    for w in 1 2; do
      run_peer "$tmp/pt.out" --arch "$arch" --world $w --batch "$BATCH" --size "$SIZE" --steps "$STEPS"
      sed -n 's/.*global_img_per_s=\([0-9.]*\).*/\1/p' "$tmp/pt.out" >>"$tmp/pt$w.$arch"
      [[ $w == 2 ]] && sed -n 's/.*allreduce_ms=\([0-9.]*\).*/\1/p' "$tmp/pt.out" >>"$tmp/gloo.$arch"
    done
  done
done

echo "# firetrain vs PyTorch DDP (gloo, torchvision, channels_last), CPU, 1 thread per rank, batch $BATCH per rank, ${SIZE}x${SIZE}, synthetic data;"
echo "# img/s = global images per second of one training step (median of $STEPS steps after 2 warm-up), median of $REPEATS alternating runs"
printf "# %-14s %11s %11s %7s %11s %11s %7s %9s\n" arch ft_1r_img/s ft_2r_img/s ft_eff pt_1r_img/s pt_2r_img/s pt_eff ratio_2r
for arch in $ARCHS; do
  f1=$(median <"$tmp/ft1.$arch") f2=$(median <"$tmp/ft2.$arch")
  p1=$(median <"$tmp/pt1.$arch") p2=$(median <"$tmp/pt2.$arch")
  awk -v a="$arch" -v f1="$f1" -v f2="$f2" -v p1="$p1" -v p2="$p2" 'BEGIN {
    printf "  %-14s %11.1f %11.1f %7.3f %11.1f %11.1f %7.3f %9.2f\n", a, f1, f2,
      (f1 > 0 ? f2 / (2 * f1) : 0), p1, p2, (p1 > 0 ? p2 / (2 * p1) : 0), (p2 > 0 ? f2 / p2 : 0) }'
done
echo "# eff = img/s at 2 ranks / (2 x img/s at 1 rank); ratio_2r = firetrain / DDP img/s at 2 ranks (> 1: firetrain faster)"
echo "# runs: $(for a in $ARCHS; do echo -n "$a ft2=[$(tr '\n' ' ' <"$tmp/ft2.$a")] pt2=[$(tr '\n' ' ' <"$tmp/pt2.$a")] "; done)"

echo
echo "# all-reduce of the whole fp32 gradient alone, 2 ranks, median ms: firetrain (bench comm, 20 repeats) vs the peer's gloo all_reduce (20 calls)"
printf "# %-14s %12s %12s %12s %12s %9s\n" arch bytes ft_reducer ft_allreduce gloo gloo/ft
mpirun --bind-to none -np 2 "$FT" bench comm --models "${ARCHS// /,}" --repeats 20 --warmup 2 \
  >"$tmp/comm.out" 2>"$tmp/comm.err" || { cat "$tmp/comm.err" >&2; exit 1; }
for arch in $ARCHS; do
  g=$(median <"$tmp/gloo.$arch")
  awk -v a="$arch" -v g="$g" '$1 == a && $7 == "reducer" {b = $4; r = $9} $1 == a && $7 == "allreduce" {m = $9}
    END { printf "  %-14s %12d %12.3f %12.3f %12.3f %9.2f\n", a, b, r, m, g, (r > 0 ? g / r : 0) }' "$tmp/comm.out"
done
echo "# gloo/ft = gloo ms / firetrain reducer ms (> 1: firetrain faster)"
