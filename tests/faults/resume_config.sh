#!/bin/bash
# `train --checkpoint-dir ck --resume auto` with no other setting (but the per-machine --threads,
# which is not taken from the checkpoint and changes oneDNN's summation order) continues the
# stored run: the
# settings come from the checkpoint's config (data, batch, lr schedule, seed, augmentation,
# steps...), and the result is bit-identical to the uninterrupted run (1 rank). A setting given
# on the command line wins over the stored one.
source "$(dirname "$0")/common.sh"
RUN="$FT train --data d.h5 --batch 8 --lr 0.02 --lr-schedule cosine --warmup-steps 2 --steps 6
     --seed 7 --no-flip --dropout 0.3 --momentum 0.8 --threads 1 --progress plain"
$RUN --checkpoint-dir straight > a.log 2>&1 || { cat a.log; fail "straight run"; }
$RUN --checkpoint-dir split --stop-at 3 > b.log 2>&1 || { cat b.log; fail "first half"; }
$FT train --checkpoint-dir split --resume auto --threads 1 > c.log 2>&1 || { cat c.log; fail "resume with no settings"; }
grep -q "resume: settings not given on the command line, from split/ckpt_3.h5:.*--lr-schedule cosine" c.log ||
  { cat c.log; fail "stored settings not reported"; }
grep -q "resumed from split/ckpt_3.h5" c.log || { cat c.log; fail "did not resume"; }
"$TOOL" diff straight/ckpt_6.h5 split/ckpt_6.h5 || fail "resumed run differs from the straight one"
head -1 c.log
# An explicit flag wins (and is reported as a trajectory change).
$FT train --resume split/ckpt_3.h5 --steps 4 --checkpoint-dir over \
  > d.log 2>&1 || { cat d.log; fail "resume with --steps 4"; }
[ -e over/ckpt_4.h5 ] || { cat d.log; fail "--steps 4 / --checkpoint-dir over not honoured"; }
echo "PASS"
