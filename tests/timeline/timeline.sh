#!/bin/bash
# `train --timeline` end to end: 2-rank and 3-rank runs (the window cut short by the run's end,
# a checkpoint inside it, a resumed run), 1 rank, each trace checked by check_trace.py (an
# independent reader: Python's json); and the flags' bad values (exit 2 before any work).
# $1 firetrain, $2 ft_fault_tool, $3 mpiexec. Exit 77 (skip) without python3.
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../faults/common.sh"
CHECK="python3 $HERE/check_trace.py"
command -v python3 > /dev/null || { echo "SKIP: python3 not found (it checks the trace)"; exit 77; }
# 64 images of 28x28x1, 10 classes, global batch 16: squeezenet_small has 726,474 parameters.
BYTES=$((726474 * 4))
T="$TRAIN --bucket-kb 256"

# 2 ranks, 8 steps, checkpoints every 2: steps 1-4 recorded (the first step is not), ckpt at
# the end of step index 1 (global step 2) and 3 (4).
$MPI -np 2 $FT $T --steps 8 --checkpoint-dir ck --checkpoint-every 2 --timeline t2.json \
  --timeline-steps 4 > run2.log 2>&1 || { cat run2.log; fail "2 ranks: the run failed"; }
grep -q "^timeline: t2.json (2 rank(s)" run2.log || { cat run2.log; fail "2 ranks: no table"; }
grep -A3 "^timeline:" run2.log
$CHECK t2.json --ranks 2 --first 1 --steps 4 --bytes $BYTES --checkpoint-steps 1,3 || exit 1
# Its table: 2 rows with 4 steps each, and the gradient's buckets in flight (comm_ms > 0).
awk '/^#  rank/{f=1; next} f && /^ +[0-9]/{n++; if ($2 != 4 || !($6 > 0)) bad=1} END{exit !(n == 2 && !bad)}' run2.log ||
  { cat run2.log; fail "2 ranks: the table's rows"; }

# Resumed from ckpt_4 (steps 4..7 left) with a window of 10: steps 5, 6 and 7 are recorded
# (the run's first step is not; the window is cut short by the end).
$MPI -np 2 $FT $T --steps 8 --checkpoint-dir ck --resume ck/ckpt_4.h5 --timeline t2r.json \
  --timeline-steps 10 > run2r.log 2>&1 || { cat run2r.log; fail "resume: the run failed"; }
$CHECK t2r.json --ranks 2 --first 5 --steps 3 --bytes $BYTES --checkpoint-steps 5 || exit 1
# Resumed again without --timeline: the setting is not taken from the checkpoint (no trace).
rm -f t2r.json
$MPI -np 2 $FT $T --steps 10 --checkpoint-dir ck --resume auto > run2a.log 2>&1 ||
  { cat run2a.log; fail "resume without --timeline: the run failed"; }
[ ! -e t2r.json ] && ! grep -q "^timeline:" run2a.log ||
  { cat run2a.log; fail "resume without --timeline wrote a trace"; }

# Evaluation each epoch (4 steps per epoch) inside the window is not recorded into a step;
# --stop-at 3 ends the run (and the window) after step 2: steps 1 and 2 recorded.
$MPI -np 2 $FT $T --steps 8 --val d.h5 --timeline tv.json > runv.log 2>&1 ||
  { cat runv.log; fail "--val: the run failed"; }
grep -q "val top-1" runv.log || { cat runv.log; fail "--val: no evaluation ran"; }
$CHECK tv.json --ranks 2 --first 1 --steps 7 --bytes $BYTES || exit 1
$MPI -np 2 $FT $T --steps 8 --stop-at 3 --checkpoint-dir ck2 --timeline ts.json > runs.log 2>&1 ||
  { cat runs.log; fail "--stop-at: the run failed"; }
$CHECK ts.json --ranks 2 --first 1 --steps 2 --bytes $BYTES || exit 1

# 3 ranks (global batch 15 split 5/5/5), 3 steps, window 10: steps 1 and 2 recorded.
$MPI -np 3 $FT ${T/--batch 16/--batch 15} --steps 3 --timeline t3.json > run3.log 2>&1 ||
  { cat run3.log; fail "3 ranks: the run failed"; }
$CHECK t3.json --ranks 3 --first 1 --steps 2 --bytes $BYTES || exit 1

# 1 rank: nothing travels, so no bucket events; a 1-step run records its only step.
$MPI -np 1 $FT $T --steps 1 --timeline t1.json > run1.log 2>&1 || { cat run1.log; fail "1 rank"; }
$CHECK t1.json --ranks 1 --first 0 --steps 1 --bytes $BYTES || exit 1

# Bad values: exit 2, a message, no file.
bad() {
  local want=$1; shift
  $FT $T --steps 2 "$@" > bad.log 2>&1
  local rc=$?
  [ $rc -eq 2 ] || { cat bad.log; fail "$*: exit $rc, expected 2"; }
  grep -q -- "$want" bad.log || { cat bad.log; fail "$*: no message '$want'"; }
}
bad "timeline-steps must be in 1..1000" --timeline x.json --timeline-steps 0
bad "timeline-steps must be in 1..1000" --timeline x.json --timeline-steps 1001
bad "--timeline nodir/x.json: cannot create a file there" --timeline nodir/x.json
mkdir adir
bad "--timeline adir: is a directory" --timeline adir
bad "CPU-only" --timeline x.json --device cuda
[ ! -e x.json ] || fail "a rejected run wrote x.json"
echo "PASS"
