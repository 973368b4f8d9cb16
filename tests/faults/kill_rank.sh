#!/bin/bash
# kill -9 of one rank mid-training: the job ends non-zero within 30 s (no hang) and the newest
# checkpoint is intact and resumable. Done for rank 0 (the checkpoint writer) and rank 1.
source "$(dirname "$0")/common.sh"
for victim in 0 1; do
  rm -rf ck
  $MPI -np 2 $FT $TRAIN --steps 100000 --log-every 2 --checkpoint-every 2 --checkpoint-dir ck \
      > run.log 2>&1 &
  mp=$!
  wait_for ck/ckpt_6.h5 60 || { cat run.log; fail "no checkpoint"; }
  pid=$(rank_pid $mp $victim) || fail "no rank $victim"
  t0=$(date +%s.%N)
  kill -9 "$pid"
  # Wait at most 30 s for the job to end.
  for i in $(seq 300); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
  if kill -0 $mp 2>/dev/null; then kill -9 $mp; fail "job still running 30 s after kill -9 of rank $victim"; fi
  wait $mp
  rc=$?
  t1=$(date +%s.%N)
  [ $rc -ne 0 ] || fail "exit code 0 after a rank was killed"
  latest=$(ls ck/ckpt_*.h5 | sed 's/.*ckpt_\([0-9]*\).h5/\1/' | sort -n | tail -1)
  "$TOOL" check ck/ckpt_$latest.h5 || fail "newest checkpoint ck/ckpt_$latest.h5 is not valid"
  $MPI -np 2 $FT $TRAIN --steps 100000 --checkpoint-dir ck --resume auto --stop-at $((latest + 2)) \
      > res.log 2>&1 || { cat res.log; fail "resume after kill"; }
  grep -q "resumed from ck/ckpt_$latest.h5" res.log || { cat res.log; fail "did not resume"; }
  printf "kill -9 of rank %s: job ended %.1f s later with exit %s; resumed from step %s\n" \
    $victim "$(awk "BEGIN{print $t1 - $t0}")" $rc $latest
done
echo "PASS"
