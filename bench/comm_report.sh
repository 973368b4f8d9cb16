#!/usr/bin/env bash
# The communication report of the README: `bench comm` and `bench scaling` with 2 ranks over
# shared memory, then across 2 simulated hosts (launch/netns_cluster.sh, TCP) at 10 and 1 Gbit/s.
# Writes each table to $OUT (default docs/bench/) and the scaling plots as SVG beside them.
# Needs root for the namespaces (the shared-memory part runs without). Takes ~10-15 minutes.
# Usage: bench/comm_report.sh       env: FT (build/firetrain), OUT, REPEATS (10), STEPS (3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FT="$(realpath "${FT:-$ROOT/build/firetrain}")"
OUT="$(mkdir -p "${OUT:-$ROOT/docs/bench}" && realpath "${OUT:-$ROOT/docs/bench}")"
REPEATS="${REPEATS:-10}" STEPS="${STEPS:-3}"
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
COMM=(bench comm --repeats "$REPEATS" --warmup 2)
SCAL=(bench scaling --steps "$STEPS" --fit-max-mb 64 --fit-repeats 3)

echo "== shared memory, 2 ranks"
"${MPI[@]}" -np 2 "$FT" "${COMM[@]}" --out "$OUT/comm_shm.csv" | tee "$OUT/comm_shm.txt"
"${MPI[@]}" -np 2 "$FT" "${SCAL[@]}" --plot "$OUT/scaling_shm.svg" | tee "$OUT/scaling_shm.txt"

if [[ $(id -u) -ne 0 ]] || ! ip netns list >/dev/null 2>&1; then
  echo "comm_report: not root or no ip netns: skipping the simulated-cluster runs" >&2
  exit 0
fi
NET="$ROOT/launch/netns_cluster.sh"
export FT_NETNS_DIR=/tmp/ft-netns-report
trap '"$NET" down >/dev/null 2>&1 || true' EXIT
for rate in 10gbit 1gbit; do
  echo "== 2 hosts over TCP at $rate"
  "$NET" down >/dev/null 2>&1 || true
  "$NET" up 2 --rate "$rate" --prefix ftrep --subnet 10.79.0
  "$NET" run -- -np 2 "$FT" "${COMM[@]}" --models squeezenet1_0,squeezenet1_1,alexnet,resnet50 \
    --out "$OUT/comm_tcp_$rate.csv" | tee "$OUT/comm_tcp_$rate.txt"
  "$NET" run -- -np 2 "$FT" "${SCAL[@]}" --plot "$OUT/scaling_tcp_$rate.svg" \
    | tee "$OUT/scaling_tcp_$rate.txt"
  "$NET" down
done
