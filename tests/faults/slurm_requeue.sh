#!/bin/bash
# launch/slurm_train.sbatch as Slurm runs it, with stand-ins for srun (mpirun with the job's
# ranks) and scontrol (records its arguments): the job trains; SIGTERM to the batch shell (what
# --signal=B:TERM@120 sends before the time limit) stops the ranks after a step, they write a
# checkpoint, the script requeues the job and exits 0; the requeued job (same script, same
# RUN_DIR) resumes from that checkpoint and continues.
SBATCH="$(cd "$(dirname "$0")/../.." && pwd)/launch/slurm_train.sbatch"
source "$(dirname "$0")/common.sh"
mkdir -p bin
cat > bin/srun <<EOS
#!/bin/bash
while [[ \$1 == --* ]]; do shift; done   # srun's own options
exec $MPI -np \$SLURM_NTASKS "\$@"
EOS
cat > bin/scontrol <<EOS
#!/bin/bash
echo "\$*" >> "$WORK/scontrol.log"
EOS
chmod +x bin/srun bin/scontrol
cat > tiny.cfg <<EOS
arch = squeezenet_small
batch = 16
lr = 0.01
warmup-steps = 3
threads = 1
dropout = 0.5
EOS
export PATH="$WORK/bin:$PATH" SLURM_JOB_ID=4242 SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1
export SLURM_SUBMIT_DIR="$WORK" BUILD_DIR="$(dirname "$FT")" CONFIG=tiny.cfg DATA=d.h5 VAL=d.h5
export DEVICE=cpu LAUNCHER=srun OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
RUN=runs/slurm-4242

bash "$SBATCH" --steps 100000 --log-every 2 > job1.log 2>&1 &
job=$!
t=0
until grep -q "step *4/" job1.log || [ $t -gt 600 ]; do sleep 0.1; t=$((t + 1)); done
grep -q "step *4/" job1.log || { cat job1.log; fail "training did not start"; }
kill -TERM $job
wait $job
rc=$?
[ $rc -eq 0 ] || { cat job1.log; fail "the batch script exited $rc after SIGTERM (expected 0)"; }
grep -q "requeue 4242" scontrol.log 2>/dev/null || { cat job1.log; fail "the job was not requeued"; }
STEP=$(sed -n 's/.*stopped after step \([0-9]*\)\/.*/\1/p' job1.log)
[ -n "$STEP" ] || { cat job1.log; fail "no stop message after SIGTERM"; }
"$TOOL" check $RUN/ckpt_$STEP.h5 || fail "checkpoint $RUN/ckpt_$STEP.h5 invalid"
echo "SIGTERM to the batch shell: exit 0, ranks stopped after step $STEP, requeued, checkpoint valid"

# The requeued job: the same script and RUN_DIR resume from that step.
bash "$SBATCH" --steps 100000 --log-every 2 --stop-at $((STEP + 2)) > job2.log 2>&1 \
  || { cat job2.log; fail "the requeued job failed"; }
grep -q "resumed from $RUN/ckpt_$STEP.h5: step $STEP of" job2.log || { cat job2.log; fail "the requeued job did not resume"; }
grep -q "stopped after step $((STEP + 2))/" job2.log || { cat job2.log; fail "the requeued job did not continue"; }
echo "requeued job: resumed from step $STEP and continued to step $((STEP + 2))"
echo "PASS"
