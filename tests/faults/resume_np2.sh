#!/bin/bash
# Exact resume at 2 ranks (bit-identical weights) and elastic restarts 2 -> 1 and 1 -> 2 ranks
# (same global batch; equal up to summation order: tolerance 1e-4, measured ~6e-8).
source "$(dirname "$0")/common.sh"
$MPI -np 2 $FT $TRAIN --steps 12 --checkpoint-dir straight > s.log 2>&1 || { cat s.log; fail "straight run"; }
$MPI -np 2 $FT $TRAIN --steps 12 --checkpoint-dir split --stop-at 5 > a.log 2>&1 || { cat a.log; fail "first half"; }
grep -q "stopped after step 5/12" a.log || { cat a.log; fail "no stop message"; }
cp -r split elastic
$MPI -np 2 $FT $TRAIN --steps 12 --checkpoint-dir split --resume auto > b.log 2>&1 || { cat b.log; fail "resume"; }
grep -q "resumed from split/ckpt_5.h5: step 5 of 12" b.log || { cat b.log; fail "did not resume at step 5"; }
"$TOOL" diff straight/ckpt_12.h5 split/ckpt_12.h5 0 || fail "2-rank resume is not bit-identical"
echo "exact resume at 2 ranks: bit-identical"
# Elastic: the 2-rank checkpoint at step 5 continued by 1 rank.
$FT $TRAIN --steps 12 --checkpoint-dir elastic --resume elastic/ckpt_5.h5 > c.log 2>&1 || { cat c.log; fail "elastic 2->1"; }
grep -q "elastic restart: written by 2 rank(s), now 1" c.log || { cat c.log; fail "no elastic message"; }
"$TOOL" diff straight/ckpt_12.h5 elastic/ckpt_12.h5 1e-4 || fail "elastic 2->1 differs"
# And 1 rank -> 2 ranks.
$FT $TRAIN --steps 12 --checkpoint-dir up --stop-at 7 > d.log 2>&1 || { cat d.log; fail "1-rank first half"; }
$MPI -np 2 $FT $TRAIN --steps 12 --checkpoint-dir up --resume auto > e.log 2>&1 || { cat e.log; fail "elastic 1->2"; }
"$TOOL" diff straight/ckpt_12.h5 up/ckpt_12.h5 1e-4 || fail "elastic 1->2 differs"
echo "PASS"
