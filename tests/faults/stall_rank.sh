#!/bin/bash
# A rank that hangs (alive, but never reaches its all-reduce; test hook FT_TEST_STALL_AT_STEP):
# with --collective-timeout 3 the job ends non-zero within 20 s of the stall, with a message
# naming the waiting rank and the collective, and the newest checkpoint is intact and resumable.
source "$(dirname "$0")/common.sh"
rm -rf ck
FT_TEST_STALL_AT_STEP=7 FT_TEST_STALL_RANK=1 \
  $MPI -np 2 $FT $TRAIN --steps 100000 --log-every 1 --checkpoint-every 2 --checkpoint-dir ck \
  --collective-timeout 3 > run.log 2>&1 &
mp=$!
# t0: when rank 1 announces the stall (it then blocks forever before the all-reduce of step 7).
for i in $(seq 600); do grep -q "stalls before" run.log && break; sleep 0.1; done
grep -q "stalls before" run.log || { kill -9 $mp; cat run.log; fail "the stall hook did not run"; }
t0=$(date +%s.%N)
for i in $(seq 200); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
if kill -0 $mp 2>/dev/null; then
  kill -9 $mp; cat run.log; fail "job still running 20 s after rank 1 stalled"
fi
wait $mp
rc=$?
t1=$(date +%s.%N)
[ $rc -ne 0 ] || { cat run.log; fail "exit code 0 after a stalled collective"; }
grep -q "rank 0 on host .*: collective MPI_I\?[Aa]llreduce of the gradients (bucket [0-9]*, [0-9]* bytes) did not complete within 3 s" run.log ||
  { cat run.log; fail "no message naming the rank and the collective"; }
[ -z "$(ls ck | grep tmp)" ] || fail "temporary checkpoint file left: $(ls ck)"
"$TOOL" check ck/ckpt_6.h5 || fail "newest checkpoint ck/ckpt_6.h5 is not valid"
$MPI -np 2 $FT $TRAIN --steps 100000 --checkpoint-dir ck --resume auto --stop-at 8 \
  > res.log 2>&1 || { cat res.log; fail "resume after the stall"; }
grep -q "resumed from ck/ckpt_6.h5" res.log || { cat res.log; fail "did not resume from ckpt_6"; }
grep "did not complete" run.log
printf "stalled rank 1 at step 7: job ended %.1f s after the stall (timeout 3 s) with exit %s; resumed from step 6\n" \
  "$(awk "BEGIN{print $t1 - $t0}")" $rc
echo "PASS"
