# Shared by the fault scripts: $1 firetrain binary, $2 ft_fault_tool, $3 mpiexec.
set -u
FT=$1
TOOL=$2
MPIEXEC=$3
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
MPI="$MPIEXEC --allow-run-as-root --oversubscribe --bind-to none"
WORK=$(mktemp -d /tmp/ft_fault.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
cd "$WORK"
"$TOOL" dataset d.h5 64 28 1 10 || exit 1
# 64 images, global batch 16: 4 steps per epoch; shuffle, augmentation and dropout on.
TRAIN="train --data d.h5 --batch 16 --lr 0.01 --warmup-steps 3 --threads 1 --dropout 0.5 --progress plain"
fail() { echo "FAIL: $*"; exit 1; }
# The MPI ranks started by mpirun pid $1 (its children), and the one with rank $2.
ranks_of() { pgrep -P "$1"; }
rank_pid() {
  local p
  for p in $(pgrep -P "$1"); do
    if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"; return 0
    fi
  done
  return 1
}
# Waits until file $1 exists (or $2 seconds pass).
wait_for() {
  local t=0
  while [ ! -e "$1" ] && [ $t -lt $(($2 * 10)) ]; do sleep 0.1; t=$((t + 1)); done
  [ -e "$1" ]
}
