#!/usr/bin/env bash
# Test of launch/netns_cluster.sh with the real trainer: two simulated hosts (network namespaces,
# 1 Gbit/s tbf links), `firetrain train` with one rank on each, over TCP between the namespaces.
# Checks that the ranks land in different namespaces, that training exits 0 and prints its final
# line, and that `down` leaves no namespace behind.
#
# Usage: tests/netns/test_netns_cluster.sh PATH/TO/firetrain
# Exit: 0 pass, 1 fail, 77 skip (not root, no usable `ip netns`, no mpirun or python3).
# The tiny dataset (64 + 16 random 28x28 images, 10 classes) is written as Fashion-MNIST IDX
# files by python3's standard library and converted with `firetrain convert fashion-mnist`, so
# no h5py is needed. Takes ~10 s on the 2-core VM; everything lives in a temp dir.
set -uo pipefail

FT=${1:-}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLUSTER="$ROOT/launch/netns_cluster.sh"

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[[ -n $FT && -x $FT ]] || fail "usage: $0 PATH/TO/firetrain (got '${FT}')"
FT=$(cd "$(dirname "$FT")" && pwd)/$(basename "$FT")
[[ $(id -u) -eq 0 ]] || skip "needs root (network namespaces)"
command -v ip >/dev/null 2>&1 || skip "no 'ip' (iproute2)"
command -v tc >/dev/null 2>&1 || skip "no 'tc' (iproute2)"
command -v mpirun >/dev/null 2>&1 || skip "no mpirun"
command -v python3 >/dev/null 2>&1 || skip "no python3"
# A name unique to this run (<= 8 characters), so that a user's cluster or a parallel run of
# this test is never touched.
PREFIX="ft$(($$ % 100000))t"
ip netns add "${PREFIX}p" 2>/dev/null || skip "'ip netns add' does not work here"
if ! ip netns exec "${PREFIX}p" true 2>/dev/null; then
  ip netns del "${PREFIX}p"
  skip "'ip netns exec' does not work here"
fi
ip netns del "${PREFIX}p"

WORK=$(mktemp -d /tmp/ft-netns-test.XXXXXX)
export FT_NETNS_DIR="$WORK/netns"
cleanup() {
  "$CLUSTER" down >/dev/null 2>&1 || "$CLUSTER" down --prefix "$PREFIX" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# Tiny dataset: Fashion-MNIST IDX layout, random pixels, labels i mod 10.
mkdir -p "$WORK/idx" "$WORK/data"
python3 - "$WORK/idx" <<'EOF' || fail "could not write the IDX files"
import gzip, random, struct, sys
rng = random.Random(7)
for prefix, n in (("train", 64), ("t10k", 16)):
    with gzip.open(f"{sys.argv[1]}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        pixels = bytes(rng.randrange(256) for _ in range(n * 784))
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pixels)
    with gzip.open(f"{sys.argv[1]}/{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
EOF
"$FT" convert fashion-mnist "$WORK/idx" "$WORK/data" >/dev/null || fail "firetrain convert failed"

"$CLUSTER" up 2 --rate 1gbit --prefix "$PREFIX" || fail "netns_cluster.sh up failed"
"$CLUSTER" status || fail "netns_cluster.sh status failed"

# Placement: one rank per namespace.
where=$(timeout 60 "$CLUSTER" run -- -np 2 --map-by node ip netns identify 2>&1)
echo "$where"
[[ $(sort <<<"$where" | tr '\n' ' ') == "${PREFIX}0 ${PREFIX}1 " ]] ||
  fail "ranks did not land in ${PREFIX}0 and ${PREFIX}1"

log="$WORK/train.log"
timeout 90 "$CLUSTER" run -- -np 2 --map-by node -x OMP_NUM_THREADS=1 \
  "$FT" train --arch squeezenet_small --data "$WORK/data/fashion-mnist-train.h5" \
  --val "$WORK/data/fashion-mnist-test.h5" --steps 4 --batch 8 --threads 1 \
  --no-eval-each-epoch --log-every 1 --progress plain --checkpoint-dir "$WORK/ckpt" 2>&1 |
  tee "$log"
rc=${PIPESTATUS[0]}
((rc == 0)) || fail "firetrain train across 2 namespaces exited $rc"
grep -q "2 rank(s)" "$log" || fail "the trainer did not report 2 ranks"
grep -Eq "^step +4/4" "$log" || fail "no 'step 4/4' line"
grep -Eq "^final: val top-1 .* trained 4 steps" "$log" ||
  fail "no 'final: ... trained 4 steps' line"
[[ -s $WORK/ckpt/ckpt_4.h5 ]] || fail "no final checkpoint $WORK/ckpt/ckpt_4.h5"

"$CLUSTER" down || fail "netns_cluster.sh down failed"
left=$(ip netns list | awk -v p="$PREFIX" 'index($1, p) == 1 {print $1}')
[[ -z $left ]] || fail "namespaces left after down: $left"
echo "PASS: netns_cluster (2 hosts, 1gbit, firetrain train 4 steps)"
