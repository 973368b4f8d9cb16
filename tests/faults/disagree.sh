#!/bin/bash
# Ranks that disagree are stopped at start-up, before any training step, with exit 2 and a
# message naming the ranks and the first item that differs (mpirun's MPMD form gives rank 1
# other arguments): another --lr; another dataset of the same size and shape (labels differ);
# another --grad-comm-dtype; another build (FT_TEST_BUILD_ID, a test-only override of the build
# id that ranks compare, see include/firetrain/core/build_info.hpp).
source "$(dirname "$0")/common.sh"
"$TOOL" dataset d2.h5 64 28 1 10 3 || exit 1  # same N, shape and classes; labels (i + 3) % 10
BASE="$TRAIN --steps 4 --checkpoint-dir ck"
check() {  # $1 case, $2 expected message (grep -E); runs the rest as the job
  local name=$1 want=$2
  shift 2
  t0=$(date +%s.%N)
  "$@" > run.log 2>&1
  rc=$?
  t1=$(date +%s.%N)
  [ $rc -eq 2 ] || { cat run.log; fail "$name: exit $rc, expected 2"; }
  grep -Eq "$want" run.log || { cat run.log; fail "$name: message does not name the difference"; }
  grep -q "^step " run.log && { cat run.log; fail "$name: a training step ran"; }
  [ -z "$(ls ck 2>/dev/null | grep ckpt_)" ] || fail "$name: a checkpoint was written"
  grep -m1 "disagree" run.log
  printf "%s: exit 2 after %.1f s, before any step\n" $name "$(awk "BEGIN{print $t1 - $t0}")"
}
check lr "ranks disagree on the model, config or dataset: rank 1 differs from rank 0: rank 0 has '--lr 0.01', rank 1 has '--lr 0.02'" \
  $MPI -np 1 $FT $BASE : -np 1 $FT $BASE --lr 0.02
check dataset "rank 1 differs from rank 0: rank 0 has 'labels fnv1a64 [0-9]+', rank 1 has 'labels fnv1a64 [0-9]+'" \
  $MPI -np 1 $FT $BASE : -np 1 $FT $BASE --data d2.h5
check grad_comm_dtype "rank 1 differs from rank 0: rank 0 has '--grad-comm-dtype fp32', rank 1 has '--grad-comm-dtype bf16'" \
  $MPI -np 1 $FT $BASE : -np 1 $FT $BASE --grad-comm-dtype bf16
ID=$("$FT" --version | sed -n 's/^  build: //p')
[ -n "$ID" ] || fail "firetrain --version prints no build line"
check build "rank 1 differs from rank 0: rank 0 has 'build firetrain [^']*git [^']*', rank 1 has 'build firetrain 0.0.0, git 0000000, other build'" \
  $MPI -np 1 $FT $BASE : -np 1 env FT_TEST_BUILD_ID="firetrain 0.0.0, git 0000000, other build" $FT $BASE
echo "PASS"
