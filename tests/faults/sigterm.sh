#!/bin/bash
# SIGTERM / SIGUSR1: every rank finishes the current step, they agree on the step, rank 0
# writes a checkpoint, the job exits 0, and --resume auto continues from that step.
source "$(dirname "$0")/common.sh"
LONG="$TRAIN --steps 100000 --log-every 2 --checkpoint-dir ck"
run_and_signal() {  # $1 target (rank1 | mpirun), $2 signal; sets RC and STEP
  rm -rf ck run.log  # (the background launch truncates run.log later: no stale "step 4")
  $MPI -np 2 $FT $LONG > run.log 2>&1 &
  local mp=$!
  local t=0
  until grep -q "step *4/" run.log || [ $t -gt 600 ]; do sleep 0.1; t=$((t + 1)); done
  grep -q "step *4/" run.log || { cat run.log; fail "training did not start"; }
  if [ "$1" = rank1 ]; then
    local r1
    r1=$(rank_pid $mp 1) || fail "no rank 1"
    kill -$2 "$r1"   # one rank only: the other must stop at the same step
  else
    kill -$2 $mp
  fi
  wait $mp
  RC=$?
  STEP=$(sed -n 's/.*stopped after step \([0-9]*\)\/.*/\1/p' run.log)
  [ -n "$STEP" ] || { cat run.log; fail "no stop message after SIG$2 to $1"; }
  "$TOOL" check ck/ckpt_$STEP.h5 || fail "checkpoint ck/ckpt_$STEP.h5 invalid"
  echo "SIG$2 to $1: exit $RC, stopped after step $STEP, checkpoint valid"
}
run_and_signal rank1 TERM
[ $RC -eq 0 ] || { cat run.log; fail "exit code $RC after SIGTERM to one rank"; }
# Resume continues from that step (and stops 2 steps later).
$MPI -np 2 $FT $LONG --resume auto --stop-at $((STEP + 2)) > res.log 2>&1 || { cat res.log; fail "resume"; }
grep -q "resumed from ck/ckpt_$STEP.h5: step $STEP of" res.log || { cat res.log; fail "did not resume"; }
grep -q "stopped after step $((STEP + 2))/" res.log || { cat res.log; fail "resumed run did not continue"; }
run_and_signal mpirun USR1   # mpirun forwards SIGUSR1: exit 0
[ $RC -eq 0 ] || { cat run.log; fail "exit code $RC after SIGUSR1 to mpirun"; }
# SIGTERM to mpirun: it forwards SIGTERM to the ranks (which checkpoint and exit 0) but
# reports exit 1 itself, and sends SIGKILL after odls_base_sigkill_timeout (1 s by default).
run_and_signal mpirun TERM
echo "PASS"
