#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, builds firetrain with the CUDA backend, runs
# every GPU test (CPU-vs-CUDA parity of every op and of whole training steps, NCCL all-reduce
# with exact values), then the GPU step benchmark of SqueezeNet 1.0 and 1.1 at 224x224 side by
# side with PyTorch (torchvision's models, channels_last, on the same GPU, in the same run), and
# prints a table with the ratios; then the trainer end to end on the GPU, `bench comm` (the NCCL
# reducer at 1 rank: its fixed overhead) and, where the Fashion-MNIST files are there, the main
# job. Everything runs against one deadline, most valuable first:
#   1. build firetrain + firetrain_tests, then firetrain_mpi_tests + ft_fault_tool (a failure
#      there is reported; what can still run, runs)
#   2. GPU tests, one process each, CUDA_LAUNCH_BLOCKING=1: CudaOps (op parity), Archs/CudaNet
#      (fp32 steps), Archs/CudaHalfNet (bf16/fp16 steps), any other Cuda* suite, MpiNccl (1 rank)
#   3. benchmark rows fp32 and bf16 of squeezenet1_0, then of squeezenet1_1, then the
#      squeezenet1_0 bf16 step without the stem's channel padding (FT_CONV_PAD_CHANNELS=0)
#   4. train smoke test fp32, then bf16; the GPU faults (NaN gradient, fp16 overflow skipping,
#      a stalled NCCL stream against --collective-timeout); one epoch of the main job in bf16
#   5. the rest: per-layer firetrain vs PyTorch on the GPU (bf16, fp32), the per-kernel
#      profile of a bf16 step (Nsight Compute, where it works), the fp16 row, the
#      Fire-concat copy vs zero-copy row, bench comm, the fp16 smoke test, eval GPU vs CPU,
#      the 15-epoch main job (fp32, bf16) if enough time is left for it (MAINJOB_MIN_S)
# Each step is started only before DEADLINE_S (default 420 s after the script's start); what is
# left then prints "skipped: out of time (DEADLINE_S)", and every table is printed and the logs
# packed all the same. Each command that could hang runs under `timeout -k 10` (test binary
# 240 s, benchmark process 90 s, train/eval run 90 s, main job 240 s), cut so that it ends by
# DEADLINE_S + 60 s: the whole script ends by ~DEADLINE_S + 80 s (~500 s). Measured on an H200
# machine (16 cores, 2026-11-29): extraction 3 s, configure + build 38 s, GPU tests 23 s, the 4
# first benchmark rows 105 s, smoke tests 10 s, the fp16 and copy rows 34 s, bench comm 27 s,
# the rest 9 s: 249 s in all, before the per-layer comparison and the GPU faults were added
# (estimated +60 s) and the stem-padding variant row (one more bf16 step process, ~15-25 s). The machine started in ~30 s; 3 such calls fit the 15 minutes.
#
# With the `device` tool (15 min of device time per task, all calls and machine starts together;
# <= 10 min per call; the machine goes back 30 s after a call ends, so a second call usually
# starts a fresh, bare machine that must build again): ONE call.
#   here, once:  tests/gpu_check.sh --prepare      (48 MB into .gpudeps/: the packages, pruned,
#                                                   22 MB; Fashion-MNIST's IDX files, 26 MB)
#   the call:    run  command  "bash tests/gpu_check.sh"
#                     carry    [".gpudeps"]
#                     timeout_s 560       (script <= ~500 s, ~350-390 s expected; + start ~30 s)
# The tree (~11 MB) + .gpudeps (48 MB) fit the 64 MiB carry limit; the script converts the
# dataset for the main job (which comes last) on the machine. (The HDF5 files themselves,
# datasets/*.h5, 32 MB, would not fit beside the packages.) If the call ends at once with exit 2 (a missing library, no CUDA backend), fix that
# and call again: a fresh machine costs ~2 min of the 15.
# The device tool brings back at most 8 files of $OUT: the script writes 6 summaries there
# (gpu_check.log, parity_errors.txt, bench_gpu.txt, bench_comm_gpu.txt, train_eval.txt,
# layers_gpu.txt; extra.txt with EXTRA) and
# logs.tgz with the detailed logs (build, each test binary, each benchmark process, each
# training run), refreshed after every step. The summary tables are printed last (the tool's
# output_tail holds them); a failing test binary's failures are printed too.
#
# Usage: tests/gpu_check.sh              build + tests + benchmarks + training; logs and tables
#                                        in $OUT (default gpu-check-out/)
#        tests/gpu_check.sh --prepare    on a Debian 12 machine with apt: the Debian packages
#                                        the build needs and the Fashion-MNIST files, packed
#                                        into .gpudeps/ (for a GPU machine that cannot reach a
#                                        package archive)
# Env:   DEADLINE_S (420: seconds after the start past which nothing new starts), CUDA_ARCH
#        (default 90: Hopper; 80 for A100), BATCH (256), STEPS (10), JOBS (nproc),
#        MAINJOB_PREC ("fp32 bf16": the main job's precisions; it runs 14,062 steps of batch 64:
#        ~3.2 min per precision on an H200 at the 4,700 img/s the smoke tests reached in their
#        last 10 steps, ~6.5 min at the 2,300 img/s of their whole run with start-up; not
#        measured), MAINJOB_MIN_S (250: a precision starts only with that much time left before
#        DEADLINE_S + 60; each is cut at 420 s). After the rest it needs its own call:
#        SKIP_TESTS=1 SKIP_BENCH=1 SKIP_TRAIN=1 MAINJOB_PREC=bf16 DEADLINE_S=400, timeout_s 500,
#        SKIP_BENCH=1 / SKIP_TESTS=1 / SKIP_TRAIN=1 / SKIP_MAINJOB=1 (leave a part out, e.g. to
#        split the work across calls on a longer lease; a call on a still-warm machine reuses
#        BUILD_DIR and /tmp/ftsys), BUILD_DIR (build-gpu), EXTRA (a script, relative to the
#        repository, run right after the build with the build's environment and $FT, its
#        output in extra.txt; e.g. EXTRA=bench/gpu_conv_diag.sh: where the convolution time goes)
# Exit:  0 everything passed; 1 a build, test, benchmark or training step failed or timed out,
#        or the GPU tests skipped for want of a GPU (e.g. a driver too old for the toolkit);
#        2 no CUDA toolkit, no CUDA backend configured, or missing dependencies; 3 nothing
#        failed but some steps were skipped for want of time (DEADLINE_S).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.gpudeps"
PKGS=(libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7
      libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm2-2 libpsm-infinipath1 librdmacm1
      libibverbs1 libnl-3-200 libnl-route-3-200 libnuma1 libmunge2 libltdl7 libhdf5-dev
      libhdf5-103-1 libhdf5-hl-100 libsz2 libaec0 libdnnl-dev libdnnl2
      libgtest-dev googletest libjpeg62-turbo libjpeg62-turbo-dev libjpeg-dev libpng-dev
      libpng16-16 zlib1g-dev libxnvctrl0 libpciaccess0
      # The rest of the shared libraries firetrain loads (`ldd build/firetrain` on Debian 12,
      # less glibc, libstdc++, libgcc and CUDA): Debian's libhdf5 links libcurl4 (OpenSSL), which
      # needs libldap-2.5.so.0 (Ubuntu 24.04 has libldap.so.2), Kerberos, ... (8.8 MB).
      libcurl4 libldap-2.5-0 libsasl2-2 libsasl2-modules-db libdb5.3 libnghttp2-14 librtmp1
      libssh2-1 libpsl5 libbrotli1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
      libkeyutils1 libcom-err2 libidn2-0 libunistring2 libgnutls30 libp11-kit0 libtasn1-6
      libnettle8 libhogweed6 libgmp10 libssl3 libzstd1 libffi8 ocl-icd-libopencl1 libudev1
      libgomp1)

# --prepare: the packages, extracted and pruned of what neither the build nor the binaries
# read (documentation, translations, sources, static libraries except GoogleTest's, which
# Debian ships static only), as one xz tarball (22 MB instead of 30 MB of .deb files); and
# the Fashion-MNIST IDX files of Debian's dataset-fashion-mnist, uncompressed and xz'd (26 MB
# instead of the 32 MB of HDF5 files), so that the tree, the packages and the main job's data
# fit the device tool's 64 MiB upload together. The GPU machine unpacks both with python3's
# lzma (no xz binary needed) and converts the dataset with `firetrain convert`.
if [[ ${1:-} == --prepare ]]; then
  set -e
  command -v xz >/dev/null || { echo "gpu_check --prepare: needs xz (apt-get install xz-utils)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/debs" "$tmp/sys" "$DEPS"
  (cd "$tmp/debs" && apt-get download "${PKGS[@]}")
  for f in "$tmp"/debs/*.deb; do dpkg-deb -x "$f" "$tmp/sys"; done
  rm -rf "$tmp"/sys/usr/share/{doc,man,locale,lintian,bug} "$tmp/sys/usr/src"
  find "$tmp/sys" -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' -delete
  rm -f "$DEPS"/*.deb
  tar -C "$tmp/sys" -cf - . | xz -9 -T0 >"$DEPS/ftsys.tar.xz"
  FM=/usr/share/datasets/fashion-mnist
  if [[ -d $FM ]]; then
    mkdir -p "$DEPS/fashion-mnist"
    for f in "$FM"/*-ubyte.gz; do
      b=$(basename "$f" .gz)
      gzip -dc "$f" | xz -9 -T0 >"$DEPS/fashion-mnist/$b.xz"
    done
  else
    echo "gpu_check --prepare: no $FM (apt-get install dataset-fashion-mnist): the main job will be skipped" >&2
  fi
  grep -qx '/.gpudeps/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpudeps/' >>"$ROOT/.git/info/exclude"
  du -sh "$DEPS" "$DEPS"/*
  exit 0
fi

SECONDS=0
DEADLINE_S="${DEADLINE_S:-420}"
MAINJOB_MIN_S="${MAINJOB_MIN_S:-250}"
[[ $DEADLINE_S =~ ^[0-9]+$ ]] || { echo "gpu_check: DEADLINE_S must be a number of seconds" >&2; exit 2; }
HARD_S=$((DEADLINE_S + 60))  # commands started before the deadline are cut here
OUT="${OUT:-$ROOT/gpu-check-out}"
mkdir -p "$OUT"
# $OUT holds at most 8 files (what the device tool returns): the summaries gpu_check.log,
# parity_errors.txt, bench_gpu.txt, bench_comm_gpu.txt, train_eval.txt, layers_gpu.txt, with
# EXTRA extra.txt, and logs.tgz, which
# packs the detailed logs (written to $LOGS) after every step and at exit, so that a run
# killed at its time limit still returns what it had.
LOGS=$(mktemp -d /tmp/gpu_check_logs.XXXXXX)
W=""  # the training runs' scratch folder (synthetic dataset, checkpoints)
pack_logs() { tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null; }
# shellcheck disable=SC2317  # (run by the EXIT trap)
on_exit() { pack_logs; [[ -n $W ]] && rm -rf "$W"; }
trap on_exit EXIT
BUILD_DIR="${BUILD_DIR:-$ROOT/build-gpu}"
JOBS="${JOBS:-$(nproc)}"
log() { echo "== $(date +%T) [${SECONDS} s] $*" | tee -a "$OUT/gpu_check.log"; }

# --- time: one deadline for starting work, one timeout per command ---------------------------
OOT="skipped: out of time (DEADLINE_S)"
NOT_RUN=$OOT  # what the summary says of a step never reached
oot=0  # 1 once anything was skipped for want of time
in_time() {  # WHAT: true before DEADLINE_S; else prints "WHAT: skipped: out of time (DEADLINE_S)"
  (( SECONDS < DEADLINE_S )) && return 0
  if (( !oot )); then log "DEADLINE_S=$DEADLINE_S s passed: what is left is skipped"; fi
  oot=1
  echo "  $1: $OOT" | tee -a "$OUT/gpu_check.log"
  return 1
}
LIMIT=0
tm() {  # LIMIT_S CMD...: CMD under `timeout -k 10`, the limit cut to end by HARD_S (>= 10 s)
  local lim=$1 left=$((HARD_S - SECONDS))
  shift
  (( left < 10 )) && left=10
  (( lim > left )) && lim=$left
  LIMIT=$lim
  timeout -k 10 "$lim" "$@"
}
rc_text() {  # exit code of a tm command -> words
  case $1 in
    0) echo "exit code 0" ;;
    124) echo "TIMED OUT: killed by timeout after ${LIMIT} s (exit 124)" ;;
    137) echo "TIMED OUT or killed: SIGKILL (exit 137; timeout's KILL comes 10 s after ${LIMIT} s)" ;;
    *) echo "exit code $1" ;;
  esac
}
is_timeout() { [[ $1 == 124 || $1 == 137 ]]; }

# --- what the summary prints (summary() is called at the end, and on SIGTERM/SIGINT) ----------
fail=0
BUILD_SUM=""
TEST_SUM=()
TE="$OUT/train_eval.txt"  # (rewritten only by a run that trains: SKIP_* runs can share $OUT)
[[ ${SKIP_TRAIN:-0} != 1 ]] && rm -f "$TE"
COMM_SUM=""
BATCH="${BATCH:-256}" STEPS="${STEPS:-10}"
T="$OUT/bench_gpu.txt"
BROWS=("squeezenet1_0 fp32" "squeezenet1_0 bf16" "squeezenet1_0 fp16" "squeezenet1_1 fp32" "squeezenet1_1 bf16")
declare -A BROW=()  # "arch prec" -> the table's row
# Variants of the squeezenet1_0 bf16 step (one setting changed), each beside the default
# ZC_MS of the same run: the zero-copy Fire concat against copying it for cuDNN, and the
# stem's channel padding (C = 3 -> 8 for tensor cores) against none.
VARIANTS=(copy pad)
declare -A VROW=() VENV=([copy]=FT_CONV_TWO_PART=copy [pad]=FT_CONV_PAD_CHANNELS=0)
declare -A VLABEL=([copy]="Fire concat copied (FT_CONV_TWO_PART=copy)"
                   [pad]="stem input channels not padded (FT_CONV_PAD_CHANNELS=0)")
pos() { [[ ${1:-} =~ ^[0-9]*\.?[0-9]+$ ]] && awk -v x="$1" 'BEGIN { exit !(x > 0) }'; }
write_bench_table() {  # the table so far (FINAL=1: rows never run are marked skipped)
  local k final=${1:-0}
  {
    printf "# firetrain vs PyTorch on %s: one training step (fwd+loss+bwd+SGD), batch %d, 224x224, median of %d steps\n" \
      "$(cut -d, -f1 "$LOGS/gpu.txt" 2>/dev/null | grep . | head -1 || echo '(no GPU name: nvidia-smi failed)')" "$BATCH" "$STEPS"
    printf "# %-14s %-9s %10s %10s %10s %10s %7s\n" arch precision ft_ms ft_img/s pt_ms pt_img/s ratio
    for k in "${BROWS[@]}"; do
      if [[ -n ${BROW[$k]:-} ]]; then echo "${BROW[$k]}"
      elif (( final )); then printf "  %-14s %-9s %s\n" "${k% *}" "${k#* }" "$NOT_RUN"; fi
    done
    for k in "${VARIANTS[@]}"; do
      if [[ -n ${VROW[$k]:-} ]]; then echo "${VROW[$k]}"
      elif (( final )); then echo "# squeezenet1_0 bf16, ${VLABEL[$k]}: $NOT_RUN"; fi
    done
    echo "# ratio = PyTorch ms / firetrain ms (> 1: firetrain faster); n/a: that side failed or timed out" \
      "(bench_*.log in logs.tgz)"
    echo "# PyTorch: torchvision model, channels_last, autocast bf16/fp16 (fp16 with GradScaler), TF32 off for fp32;" \
      "firetrain's bench step runs no loss scaling (one scale+check pass over 1.2 M gradients: negligible)"
  } >"$T"
}
summary() {
  code=$fail
  (( code == 0 && oot )) && code=3
  {
    echo
    echo "==================== gpu_check summary: exit $code (fail=$fail), ${SECONDS} s of DEADLINE_S=$DEADLINE_S ===================="
    [[ -s $LOGS/gpu.txt ]] && echo "# GPU: $(head -1 "$LOGS/gpu.txt")$( ((NGPU > 1)) && echo " (x$NGPU)")"
    echo "# build:${BUILD_SUM%,}"
    echo "# GPU tests (one process each, CUDA_LAUNCH_BLOCKING=1; logs tests_*.log in logs.tgz):"
    (( ${#TEST_SUM[@]} )) && printf '%s\n' "${TEST_SUM[@]}"
    [[ -s $OUT/parity_errors.txt ]] && echo "# parity errors measured: $(wc -l < "$OUT/parity_errors.txt") lines in parity_errors.txt"
    if [[ ${SKIP_BENCH:-0} != 1 ]]; then
      write_bench_table 1
      cat "$T"
      if (( NGPU > 1 )); then echo "# bench comm --device cuda, $NGPU ranks (reducer, 1-bucket, nccl-tests-style floor):"
      else echo "# bench comm --device cuda, 1 rank (reducer, 1-bucket; no floor row at 1 rank):"; fi
      if [[ -n $COMM_SUM ]]; then echo "$COMM_SUM"
      elif [[ -s $OUT/bench_comm_gpu.txt ]]; then grep -E "^  |^# (squeeze|alex|Out|Avg)" "$OUT/bench_comm_gpu.txt"
      else echo "  $NOT_RUN"; fi
    else
      echo "# step benchmark and bench comm: skipped (SKIP_BENCH=1)"
    fi
    if [[ -s ${LAYERS:-} ]]; then
      echo "# where the time goes (layers_gpu.txt): per layer vs PyTorch (totals), per kernel (top 12):"
      grep -E "^# (squeeze|whole|[0-9]+ kernel launches|firetrain's own|kernel profile|layers)|^  total" "$LAYERS"
      awk '/kernel launches/ {k = 1; n = 0} k && /^  +[0-9]+ +[0-9.]+ +[0-9.]+%/ && n < 12 {print; n++}' "$LAYERS"
    fi
    echo "# train smoke tests (60 steps, stop at 30 + resume), eval GPU vs CPU, GPU faults, main job:"
    [[ ${SKIP_TRAIN:-0} == 1 ]] && echo "  smoke tests, eval and faults: skipped (SKIP_TRAIN=1)"
    if [[ -s $TE ]]; then cat "$TE"
    elif [[ ${SKIP_TRAIN:-0} != 1 ]]; then echo "  $NOT_RUN"; fi
    (( oot )) && echo "# DEADLINE_S=$DEADLINE_S s: what says '$OOT' did not run (more time: DEADLINE_S and timeout_s; or leave parts out: SKIP_*)"
    echo "# outputs in $OUT: gpu_check.log parity_errors.txt bench_gpu.txt bench_comm_gpu.txt train_eval.txt layers_gpu.txt logs.tgz${EXTRA:+ extra.txt}"
  } | tee -a "$OUT/gpu_check.log"
  log "done (exit $code, fail=$fail)"
}
trap 'echo "gpu_check: interrupted" >&2; fail=1; NOT_RUN="not run (interrupted)"; summary; exit 1' TERM INT

command -v nvidia-smi >/dev/null && timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt"
# GPUs on this machine (one line each above): with 2 or more, the NCCL tests, `bench comm` (its
# nccl-tests-style floor row and ratios) and a training run also run at one rank per GPU.
NGPU=$(grep -c . "$LOGS/gpu.txt" 2>/dev/null)
[[ $NGPU =~ ^[0-9]+$ ]] || NGPU=0
MPI_PRE=(mpirun --allow-run-as-root --oversubscribe --bind-to none)  # + -np N
export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || { echo "gpu_check: no nvcc (CUDA toolkit) found" >&2; exit 2; }
log "start: DEADLINE_S=$DEADLINE_S s (commands cut at $HARD_S s), OUT=$OUT"

# Dependencies: the system's (as launch/setup.sh installs them), else the carried .gpudeps/
# (extracted once into /tmp/ftsys: a second call on the still-warm machine reuses it and need
# not carry .gpudeps again).
CMAKE_EXTRA=()
ORIG_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"  # for python3 (PyTorch): not the Debian libraries
if [[ -n $ORIG_LD_LIBRARY_PATH ]]; then PYENV=(env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH")
else PYENV=(env -u LD_LIBRARY_PATH); fi
if [[ ! -e /usr/include/oneapi/dnnl/dnnl.hpp ]] || ! command -v mpicc >/dev/null; then
  SYS=/tmp/ftsys
  if [[ ! -e $SYS/.complete ]]; then
    mkdir -p "$SYS"
    if [[ -e $DEPS/ftsys.tar.xz ]]; then
      log "extracting the prepared packages ($DEPS/ftsys.tar.xz) into $SYS"
      "${PYENV[@]}" python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
        "$DEPS/ftsys.tar.xz" | tar -xf - -C "$SYS" || { echo "gpu_check: cannot extract $DEPS/ftsys.tar.xz" >&2; exit 2; }
    elif compgen -G "$DEPS/*.deb" >/dev/null; then
      log "extracting $(printf '%s\n' "$DEPS"/*.deb | wc -l) Debian packages into $SYS"
      for f in "$DEPS"/*.deb; do
        dpkg-deb -x "$f" "$SYS" || { echo "gpu_check: cannot extract $f" >&2; exit 2; }
      done
    else
      echo "gpu_check: oneDNN/MPI/HDF5 missing; run launch/setup.sh, or run" \
        "'tests/gpu_check.sh --prepare' where apt works and carry .gpudeps/" >&2; exit 2
    fi
    touch "$SYS/.complete"
  fi
  L=$SYS/usr/lib/x86_64-linux-gnu
  # Every library those packages need must resolve here, or the build links but nothing runs.
  missing=$(LD_LIBRARY_PATH="$L:$L/openmpi/lib:${LD_LIBRARY_PATH:-}" ldd "$L/hdf5/serial/libhdf5.so" \
    "$L/libdnnl.so" "$L/openmpi/lib/libmpi.so" "$L/libjpeg.so" "$L/libpng.so" 2>&1 \
    | awk '/not found/ {print $1} /No such file/ {print $0}' | sort -u | tr '\n' ' ')
  [[ -z $missing ]] || { echo "gpu_check: shared libraries missing on this machine: $missing-" \
    "add their Debian packages to PKGS in tests/gpu_check.sh and run --prepare again" >&2; exit 2; }
  export OPAL_PREFIX=$SYS/usr PATH="$SYS/usr/bin:$PATH" LD_LIBRARY_PATH="$L:$L/openmpi/lib:${LD_LIBRARY_PATH:-}"
  # PMIx looks for its plugins at Debian's compiled-in path, where the GPU image (Ubuntu) holds
  # another PMIx version's: every MPI start prints "pmix_mca_pcompress_zlib.so: undefined
  # symbol: pmix_output_info ... (ignored)" (harmless: no compression of PMIx messages). This
  # silences the box that follows it; the dlopen lines stay.
  export PMIX_MCA_pcompress_base_silence_warning=1
  CMAKE_EXTRA+=(-DCMAKE_PREFIX_PATH="$SYS/usr" -DMPI_C_COMPILER="$SYS/usr/bin/mpicc.openmpi"
    -DMPI_C_HEADER_DIR="$L/openmpi/include" -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$L/openmpi/lib/libmpi.so"
    -DHDF5_C_INCLUDE_DIR="$SYS/usr/include/hdf5/serial" -DHDF5_C_LIBRARY_hdf5="$L/hdf5/serial/libhdf5.so"
    -DHDF5_INCLUDE_DIRS="$SYS/usr/include/hdf5/serial" -DHDF5_C_LIBRARIES="$L/hdf5/serial/libhdf5.so"
    -DHDF5_FOUND=ON -DDNNL_LIB="$L/libdnnl.so" -DDNNL_INCLUDE="$SYS/usr/include"
    -DGTEST_ROOT="$SYS/usr")
fi
# cuDNN and NCCL: the toolkit's, else the nvidia-cudnn / nvidia-nccl Python wheels' (PyTorch's):
# the folder of python3's `nvidia` packages whose include/ holds the header (nvidia/cudnn,
# nvidia/nccl; found by name, so a wheel that moved its files is found too).
wheel_root() {  # HEADER -> the wheel folder whose include/ holds it
  tm 30 "${PYENV[@]}" python3 - "$1" <<'EOF' 2>/dev/null
import os, sys
import nvidia
for base in list(nvidia.__path__):
    for d, _, files in os.walk(base):
        if sys.argv[1] in files and os.path.basename(d) == "include":
            print(os.path.dirname(d)); sys.exit(0)
EOF
}
if [[ ! -e /usr/local/cuda/include/cudnn.h && ! -e /usr/include/cudnn.h ]]; then
  CUDNN_ROOT=$(wheel_root cudnn.h); export CUDNN_ROOT
  [[ -n $CUDNN_ROOT ]] && export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:${LD_LIBRARY_PATH:-}"
fi
if [[ ! -e /usr/local/cuda/include/nccl.h && ! -e /usr/include/nccl.h ]]; then
  NCCL_ROOT=$(wheel_root nccl.h); export NCCL_ROOT
  [[ -n $NCCL_ROOT ]] && export LD_LIBRARY_PATH="$NCCL_ROOT/lib:${LD_LIBRARY_PATH:-}"
fi

# --- 1. build: firetrain + firetrain_tests, then the rest ------------------------------------
log "configure + build ($BUILD_DIR, sm_${CUDA_ARCH:-90}, $JOBS jobs)"
tm 180 cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFIRETRAIN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" "${CMAKE_EXTRA[@]}" >"$LOGS/cmake.log" 2>&1 \
  || { rc=$?; echo "gpu_check: cmake: $(rc_text $rc)"; tail -30 "$LOGS/cmake.log"; exit 2; }
grep -E "^-- firetrain:" "$LOGS/cmake.log" | tee -a "$OUT/gpu_check.log"
grep -q "building the CUDA backend" "$LOGS/cmake.log" || { echo "gpu_check: CUDA backend not configured" >&2; exit 2; }
declare -A BUILT=()
LIB_OK=1
build_targets() {  # PHASE TARGET...: ninja -k 0 (builds all it can); BUILT[t]=1 for each one built
  local rc t plog="$LOGS/build_$1.log"
  shift
  tm 420 cmake --build "$BUILD_DIR" -j "$JOBS" --target "$@" -- -k 0 >"$plog" 2>&1
  rc=$?
  # After a failure, which targets are fine: the library all of them link first (a failure
  # there fails them all), then each target alone (up to date, or its own failure again).
  if (( rc != 0 )) && { is_timeout $rc || (( SECONDS >= HARD_S - 10 )) ||
       ! tm 300 cmake --build "$BUILD_DIR" -j "$JOBS" --target firetrain_lib >>"$LOGS/build_recheck.log" 2>&1; }; then
    LIB_OK=0
  fi
  for t in "$@"; do
    if (( rc == 0 )); then
      BUILT[$t]=1
    elif (( LIB_OK )) && (( SECONDS < HARD_S - 10 )) &&
         tm 300 cmake --build "$BUILD_DIR" -j "$JOBS" --target "$t" >>"$LOGS/build_recheck.log" 2>&1; then
      BUILT[$t]=1  # (this one was fine: another target failed)
    fi
    BUILD_SUM+=" $t $([[ ${BUILT[$t]:-0} == 1 ]] && echo ok || echo FAILED),"
  done
  if (( rc != 0 )); then
    fail=1
    echo "gpu_check: build of $*: $(rc_text $rc); first errors (${plog##*/} in logs.tgz):"
    grep -E "^FAILED: " "$plog" | head -10
    grep -A3 -E "error:|error [0-9]|undefined reference|ninja: build stopped" "$plog" | head -50
  fi
  pack_logs
}
build_targets 1 firetrain firetrain_tests
if (( !LIB_OK )); then
  BUILD_SUM+=" firetrain_mpi_tests ft_fault_tool skipped (firetrain_lib failed),"
elif in_time "build of firetrain_mpi_tests ft_fault_tool"; then
  build_targets 2 firetrain_mpi_tests ft_fault_tool
else
  BUILD_SUM+=" firetrain_mpi_tests ft_fault_tool $OOT,"
fi
log "build:${BUILD_SUM%,}"
FT="$BUILD_DIR/firetrain"
[[ ${BUILT[firetrain]:-0} == 1 ]] && tm 30 "$FT" --version | tee -a "$OUT/gpu_check.log"
need() {  # TARGET WHAT: true if TARGET was built; else prints why WHAT is skipped
  [[ ${BUILT[$1]:-0} == 1 ]] && return 0
  echo "  $2: skipped: $1 not built" | tee -a "$OUT/gpu_check.log"
  return 1
}

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# --- EXTRA: a diagnosis script run right after the build, with the build's environment --------
if [[ -n ${EXTRA:-} ]] && need firetrain "EXTRA ($EXTRA)" && in_time "EXTRA ($EXTRA)"; then
  log "EXTRA: $EXTRA (output in extra.txt)"
  FT="$FT" LOGS="$LOGS" PYENV_CMD="${PYENV[*]}" tm 300 bash "$ROOT/$EXTRA" "$FT" 2>&1 | tee "$OUT/extra.txt"
  pack_logs
fi

# --- 2. GPU tests --------------------------------------------------------------------------
# A test binary's result counts only with its exit code 0 AND gtest's summary line (a crash
# prints no FAILED line), and a "no GPU" skip is a failure here (e.g. a driver too old for the
# toolkit makes cudaGetDeviceCount fail, which the library reports as 0 GPUs). Each group runs
# in its own process with CUDA_LAUNCH_BLOCKING=1 (an error is reported at the launch that made
# it, and an illegal address in one group cannot poison the next).
GT_WHY=""
gtest_ok() {  # log file, exit code, what: false (GT_WHY says why) unless the binary passed
  local log=$1 rc=$2 what=$3
  GT_WHY=""
  if is_timeout "$rc"; then
    GT_WHY="$(rc_text "$rc"), in $(grep '^\[ RUN      \]' "$log" | tail -1 | cut -c14-)"
  elif ! grep -q "^\[  PASSED  \] " "$log"; then
    GT_WHY="exit code $rc, no gtest summary (crashed?)"
  elif (( rc != 0 )); then
    GT_WHY="FAILED: exit code $rc, $(gcount "$log" FAILED) failed"
  elif grep -qE "^(no GPU visible|CUDA backend not built|needs one GPU per rank)" "$log"; then
    GT_WHY="FAILED: tests skipped for want of a GPU"
  elif grep -q "^\[==========\] 0 tests from" "$log"; then
    GT_WHY="FAILED: no test ran (filter?)"
  fi
  [[ -z $GT_WHY ]] && return 0
  echo "gpu_check: $what: $GT_WHY" >&2
  return 1
}
gcount() {  # LOG PASSED|FAILED|SKIPPED: the count on gtest's summary line (0 if none)
  local n
  n=$(sed -n "s/^\[  $2 *\] \([0-9]*\) tests\{0,1\}[,.].*/\1/p" "$1" | tail -1)
  echo "${n:-0}"
}
run_gtest() {  # NAME TARGET FILTER WHAT [RANKS: > 1 runs it under mpirun -np RANKS]
  local name=$1 bin=$BUILD_DIR/tests/$2 filter=$3 what=$4 ranks=${5:-1} log="$LOGS/tests_$1.log" rc st
  local pre=()
  (( ranks > 1 )) && pre=("${MPI_PRE[@]}" -np "$ranks")
  if ! need "$2" "$what"; then TEST_SUM+=("$(printf '  %-34s skipped: %s not built' "$what" "$2")"); return; fi
  if ! in_time "$what"; then TEST_SUM+=("$(printf '  %-34s %s' "$what" "$OOT")"); return; fi
  log "GPU tests: $what ($2 --gtest_filter='$filter')"
  tm 240 env CUDA_LAUNCH_BLOCKING=1 OMP_NUM_THREADS=4 "${pre[@]}" "$bin" --gtest_filter="$filter" --gtest_color=no >"$log" 2>&1
  rc=$?
  # each test's result line (with its time) and gtest's summary counts
  grep -E "^\[ +(OK|FAILED|SKIPPED) +\] .*\([0-9]+ ms\)$|^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?[,.]" "$log"
  if gtest_ok "$log" $rc "$what"; then
    st="passed: $(gcount "$log" PASSED) tests, $(gcount "$log" SKIPPED) skipped"
  else
    fail=1
    st="$GT_WHY ($(gcount "$log" PASSED) passed, $(gcount "$log" FAILED) failed, $(gcount "$log" SKIPPED) skipped)"
    echo "---- $what: failure context (tests_$name.log in logs.tgz) ----"
    if [[ $GT_WHY == *"want of a GPU"* ]]; then
      grep -m1 -B2 -A1 -E "^(no GPU visible|CUDA backend not built|needs one GPU per rank)" "$log"
    else
      grep -B2 -A8 -E "Failure|error:|\[  FAILED" "$log" | head -80
    fi
    if is_timeout $rc || ! grep -q "^\[  PASSED  \] " "$log"; then
      echo "-- last test started: $(grep '^\[ RUN      \]' "$log" | tail -1 | cut -c14-); last lines:"
      tail -15 "$log"
    fi
    echo "---- end of $what failure context ----"
  fi
  TEST_SUM+=("$(printf '  %-34s %s' "$what" "$st")")
  pack_logs
}
if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  run_gtest cuda_ops firetrain_tests 'CudaOps.*:CudaKernelMath.*' "CudaOps (op parity, fp32+16-bit)"
  run_gtest cuda_net firetrain_tests '*/CudaNet.*:CudaNet.*' "Archs/CudaNet (fp32 steps)"
  run_gtest cuda_halfnet firetrain_tests '*/CudaHalfNet.*:CudaHalfNet.*' "Archs/CudaHalfNet (16-bit steps)"
  # any other GPU suite (Cuda* that the three above do not cover), in a process of its own
  OTHER='Cuda*:*/Cuda*:-CudaOps.*:CudaKernelMath.*:*/CudaNet.*:CudaNet.*:*/CudaHalfNet.*:CudaHalfNet.*'
  if [[ ${BUILT[firetrain_tests]:-0} == 1 ]] &&
     timeout 60 "$BUILD_DIR/tests/firetrain_tests" --gtest_list_tests --gtest_filter="$OTHER" 2>/dev/null | grep -q '^  '; then
    run_gtest cuda_other firetrain_tests "$OTHER" "other Cuda* suites"
  fi
  run_gtest nccl firetrain_mpi_tests 'MpiNccl*:MpiReducer*' "MpiNccl+MpiReducer (1 rank)"
  if (( NGPU > 1 )); then
    run_gtest nccl_np firetrain_mpi_tests 'MpiNccl*:MpiReducer*' "MpiNccl+MpiReducer ($NGPU ranks)" "$NGPU"
  fi
  cat "$LOGS"/tests_cuda_*.log 2>/dev/null | grep "\[ measured \]" > "$OUT/parity_errors.txt"
  echo "parity errors measured: $(wc -l < "$OUT/parity_errors.txt") lines in $OUT/parity_errors.txt (CPU vs CUDA, norm-wise)"
  pack_logs
else
  TEST_SUM+=("  skipped (SKIP_TESTS=1)")
fi

# --- 3. (and 5.) step benchmark against PyTorch ------------------------------------------------
ft_step() {  # ARCH PREC LOGNAME [ENV=VALUE...]: firetrain bench step; prints the median ms, if any
  local arch=$1 prec=$2 name=$3 lg="$LOGS/$3" rc ms
  shift 3
  tm 90 env "$@" "$FT" bench step --device cuda --precision "$prec" --arch "$arch" --batch "$BATCH" \
    --size 224 --steps "$STEPS" --warmup 5 >"$lg" 2>&1
  rc=$?
  ms=$(awk -v a="$arch" '$1 == a && NF >= 11 { v = $5 } END { if (v != "") print v }' "$lg")
  if (( rc != 0 )) || ! pos "$ms"; then
    fail=1
    echo "gpu_check: firetrain bench step $arch $prec: $(rc_text $rc)$(pos "$ms" || echo ', no figure'); last lines of $name:" >&2
    tail -5 "$lg" >&2
    ms=""
  fi
  echo "$ms"
}
bench_row() {  # ARCH PREC
  local arch=$1 prec=$2 ft_ms pt_ms rc
  need firetrain "bench $arch $prec" || { BROW["$arch $prec"]=$(printf "  %-14s %-9s skipped: firetrain not built" "$arch" "$prec"); return; }
  in_time "bench $arch $prec" || { BROW["$arch $prec"]=$(printf "  %-14s %-9s %s" "$arch" "$prec" "$OOT"); return; }
  ft_ms=$(ft_step "$arch" "$prec" "bench_${arch}_${prec}_ft.log")
  [[ -z $ft_ms ]] && fail=1  # (set in the $(...) subshell too: that one is lost)
  tm 90 "${PYENV[@]}" python3 "$ROOT/bench/torch_gpu_step.py" --arch "$arch" --batch "$BATCH" --steps "$STEPS" \
    --warmup 5 --precision "$prec" >"$LOGS/bench_${arch}_${prec}_pt.log" 2>&1
  rc=$?
  pt_ms=$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$LOGS/bench_${arch}_${prec}_pt.log" | tail -1)
  if (( rc != 0 )) || ! pos "$pt_ms"; then
    fail=1
    echo "gpu_check: PyTorch peer $arch $prec: $(rc_text $rc)$(pos "$pt_ms" || echo ', no figure'); last lines:" >&2
    tail -5 "$LOGS/bench_${arch}_${prec}_pt.log" >&2
    pt_ms=""
  fi
  BROW["$arch $prec"]=$(awk -v a="$arch" -v p="$prec" -v f="$ft_ms" -v t="$pt_ms" -v b="$BATCH" 'BEGIN {
    printf "  %-14s %-9s %10s %10s %10s %10s %7s\n", a, p,
      (f > 0 ? sprintf("%.2f", f) : "n/a"), (f > 0 ? sprintf("%.1f", b * 1000 / f) : "n/a"),
      (t > 0 ? sprintf("%.2f", t) : "n/a"), (t > 0 ? sprintf("%.1f", b * 1000 / t) : "n/a"),
      (f > 0 && t > 0 ? sprintf("%.2f", t / f) : "n/a") }')
  echo "${BROW["$arch $prec"]}"
  [[ $arch == squeezenet1_0 && $prec == bf16 ]] && ZC_MS=$ft_ms
  write_bench_table
  pack_logs
}
ZC_MS=""
variant_row() {  # KEY (of VARIANTS): the squeezenet1_0 bf16 step with VENV[KEY] set
  local v=$1 ms
  need firetrain "bench $v variant" || { VROW[$v]="# squeezenet1_0 bf16, ${VLABEL[$v]}: skipped: firetrain not built"; return; }
  in_time "bench squeezenet1_0 bf16 ${VENV[$v]}" || return
  ms=$(ft_step squeezenet1_0 bf16 "bench_squeezenet1_0_bf16_${v}_ft.log" "${VENV[$v]}")
  [[ -z $ms ]] && fail=1
  VROW[$v]=$(awk -v z="$ZC_MS" -v c="$ms" -v l="${VLABEL[$v]}" 'BEGIN {
    printf "# squeezenet1_0 bf16, %s: %s ms; default: %s ms; this/default %s\n", l,
      (c > 0 ? sprintf("%.2f", c) : "n/a"), (z > 0 ? sprintf("%.2f", z) : "n/a"),
      (c > 0 && z > 0 ? sprintf("%.2f", c / z) : "n/a") }')
  echo "${VROW[$v]}"
  write_bench_table
  pack_logs
}
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  log "step benchmark (fp32, bf16): batch $BATCH, 224x224, median of $STEPS steps"
  printf "  %-14s %-9s %10s %10s %10s %10s %7s\n" arch precision ft_ms ft_img/s pt_ms pt_img/s ratio
  for a in squeezenet1_0 squeezenet1_1; do
    for p in fp32 bf16; do bench_row "$a" "$p"; done
  done
  variant_row pad
fi

# --- 4. (and 5.) the trainer end to end on the GPU (1 rank: NCCL, uploads, checkpoints, resume,
# eval) --------------------------------------------------------------------------------------
declare -A TRAINED=()
DS=0  # the synthetic dataset: 0 not made yet, 1 made, 2 cannot be made (DS_WHY says why)
DS_WHY="no synthetic dataset (ft_fault_tool dataset failed)"
train_setup() {  # the synthetic 28x28 dataset, once; false if it cannot be made
  local rc t
  (( DS == 0 )) || return $((DS - 1))
  DS=2
  for t in firetrain ft_fault_tool; do
    [[ ${BUILT[$t]:-0} == 1 ]] || { DS_WHY="$t not built"; return 1; }
  done
  W=$(mktemp -d)
  tm 60 "$BUILD_DIR/tests/ft_fault_tool" dataset "$W/d.h5" 512 28 1 10 >"$LOGS/dataset.log" 2>&1
  rc=$?
  if (( rc != 0 )); then
    echo "gpu_check: ft_fault_tool dataset: $(rc_text $rc)" >&2
    tail -5 "$LOGS/dataset.log" >&2
    fail=1
    return 1
  fi
  DS=1
}
train_case() {  # PREC [RANKS [EXTRA FLAGS...]]: 60 steps, stopped at 30, resumed (RANKS > 1: mpirun)
  local prec=$1 ranks=${2:-1} rc why tag=$1 pre=()
  shift $(( $# < 2 ? $# : 2 ))
  (( ranks > 1 )) && { tag="${prec}_np$ranks"; pre=("${MPI_PRE[@]}" -np "$ranks"); }
  in_time "train smoke $tag" || { echo "  train $tag: $OOT" >>"$TE"; return; }
  if ! train_setup; then echo "  train $tag: skipped: $DS_WHY" | tee -a "$TE"; return; fi
  log "train smoke test $tag: synthetic 28x28 data, 60 steps, stop at 30 + resume${*:+ ($*)}"
  local A=(train --device cuda --precision "$prec" --data "$W/d.h5" --val "$W/d.h5" --batch 64
     --steps 60 --lr 0.01 --warmup-steps 5 --log-every 10 --progress plain
     --checkpoint-dir "$W/ck_$tag" --checkpoint-every 10 "$@")
  tm 90 "${pre[@]}" "$FT" "${A[@]}" --stop-at 30 >"$LOGS/train_$tag.log" 2>&1
  rc=$?
  (( rc == 0 )) && { tm 90 "${pre[@]}" "$FT" "${A[@]}" --resume auto >>"$LOGS/train_$tag.log" 2>&1; rc=$?; }
  if (( rc == 0 )) && grep -q "resumed from" "$LOGS/train_$tag.log"; then
    (( ranks == 1 )) && TRAINED[$prec]=1
    echo "  train $tag: $(grep -E 'final: val' "$LOGS/train_$tag.log" | tail -1)" | tee -a "$TE"
  else
    fail=1
    if (( rc == 0 )); then why='exit code 0 but no "resumed from"'; else why=$(rc_text $rc); fi
    echo "  train $tag: FAILED ($why)" | tee -a "$TE"
    echo "gpu_check: train smoke test failed in $tag (train_$tag.log in logs.tgz):" >&2
    tail -8 "$LOGS/train_$tag.log" >&2
  fi
  pack_logs
}
# eval of the fp32 checkpoint: the GPU's top-1 and loss against the CPU's on the same
# weights (top-1 within one image of 512, loss within 1e-3 relative: fp32 on both).
eval_check() {
  local d line rc
  in_time "eval GPU vs CPU" || { echo "  eval: $OOT" >>"$TE"; return; }
  [[ ${TRAINED[fp32]:-0} == 1 ]] || { echo "  eval: skipped: no fp32 checkpoint (train fp32 did not pass)" | tee -a "$TE"; return; }
  log "eval of the fp32 checkpoint on the GPU and on the CPU"
  declare -A top1=() loss=()
  for d in cuda cpu; do
    tm 90 "$FT" eval --device $d --weights "$W/ck_fp32/ckpt_60.h5" --data "$W/d.h5" >"$LOGS/eval_$d.log" 2>&1
    rc=$?
    line=$(tail -1 "$LOGS/eval_$d.log")
    (( rc != 0 )) && line="$(rc_text $rc): $line"
    echo "  eval --device $d: $line" | tee -a "$TE"
    top1[$d]=$(sed -n 's/.*top-1 \([0-9.]*\).*/\1/p' <<<"$line")
    loss[$d]=$(sed -n 's/.*loss \([0-9.]*\).*/\1/p' <<<"$line")
  done
  if [[ -z ${top1[cuda]} || -z ${top1[cpu]} ]] || ! awk -v a="${top1[cuda]}" -v b="${top1[cpu]}" \
       -v la="${loss[cuda]}" -v lb="${loss[cpu]}" 'BEGIN { d = a - b; e = la - lb;
         exit !((d < 0 ? -d : d) <= 1.0 / 512 + 1e-9 && (e < 0 ? -e : e) <= 1e-3 * lb + 1e-6) }'; then
    echo "gpu_check: eval on the GPU differs from the CPU (or failed)" | tee -a "$TE" >&2
    fail=1
  fi
  pack_logs
}
# Issue 5 on the GPU: a NaN in the all-reduced gradient (test hook FT_TEST_NAN_GRAD_STEP, a
# copy on the compute stream after the NCCL all-reduce) must stop the run at that step with
# exit 1, naming the last good checkpoint, which stays the newest; fp16 with a loss scale that
# overflows (2^40) must skip steps and halve the scale (the CUDA finiteness flag feeding the
# dynamic scaler) and then train to a finite loss, exit 0.
gpu_faults() {
  local rc out
  in_time "GPU faults" || { echo "  faults: $OOT" >>"$TE"; return; }
  if ! train_setup; then echo "  faults: skipped: $DS_WHY" | tee -a "$TE"; return; fi
  log "GPU faults: NaN gradient at step 6 (fp32); fp16 with loss scale 2^40; NCCL stream stalled at step 5"
  local A=(train --device cuda --data "$W/d.h5" --batch 64 --lr 0.01 --warmup-steps 2 --log-every 4
     --progress plain)
  tm 90 env FT_TEST_NAN_GRAD_STEP=6 "$FT" "${A[@]}" --steps 12 --checkpoint-dir "$W/ck_nan" \
    --checkpoint-every 4 >"$LOGS/fault_nan.log" 2>&1
  rc=$?
  out=$(cat "$LOGS/fault_nan.log")
  if (( rc == 1 )) && [[ $out == *"non-finite gradient (NaN or Inf) at step 6"* &&
        $out == *"the last good checkpoint is $W/ck_nan/ckpt_4.h5"* ]] &&
     [[ ! -e $W/ck_nan/ckpt_8.h5 ]]; then
    echo "  fault NaN gradient on CUDA: passed (exit 1 at step 6, ckpt_4 the newest)" | tee -a "$TE"
  else
    fail=1
    echo "  fault NaN gradient on CUDA: FAILED ($(rc_text $rc); expected exit 1 naming step 6 and ckpt_4)" | tee -a "$TE"
    tail -5 "$LOGS/fault_nan.log" >&2
  fi
  tm 90 "$FT" "${A[@]}" --precision fp16 --loss-scale dynamic --loss-scale-init 1099511627776 \
    --steps 60 >"$LOGS/fault_fp16_overflow.log" 2>&1
  rc=$?
  local skipped
  skipped=$(grep -c "non-finite gradient, step skipped" "$LOGS/fault_fp16_overflow.log")
  if (( rc == 0 && skipped >= 1 )) && grep -q "step 0: non-finite gradient, step skipped, loss scale 2^40 -> 2^39" \
       "$LOGS/fault_fp16_overflow.log" && grep -qE "^step +60/60 .* loss [0-9]" "$LOGS/fault_fp16_overflow.log" &&
     grep -q "^loss scale: dynamic, final " "$LOGS/fault_fp16_overflow.log"; then
    echo "  fault fp16 overflow on CUDA: passed: $(grep "^loss scale: dynamic, final" "$LOGS/fault_fp16_overflow.log");" \
      "step 60: $(grep -E "^step +60/60 " "$LOGS/fault_fp16_overflow.log" | grep -oE "loss [0-9.]+")" | tee -a "$TE"
  else
    fail=1
    echo "  fault fp16 overflow on CUDA: FAILED ($(rc_text $rc), $skipped steps skipped)" | tee -a "$TE"
    tail -5 "$LOGS/fault_fp16_overflow.log" >&2
  fi
  # The NCCL timeout path on one GPU: the hook queues a kernel that holds the NCCL stream for
  # 3 x 3 + 5 s at step 5; the watchdog must end the job after --collective-timeout 3 with the
  # message, ncclCommAbort and MPI_Abort, leaving ckpt_4 valid.
  local t0=$SECONDS
  tm 60 env FT_TEST_NCCL_STALL_FINISH=5 "$FT" "${A[@]}" --steps 2000 --checkpoint-dir "$W/ck_stall" \
    --checkpoint-every 2 --collective-timeout 3 >"$LOGS/fault_nccl_stall.log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0))
  if (( rc != 0 )) && ! is_timeout $rc && grep -q "did not complete within 3 s" "$LOGS/fault_nccl_stall.log" &&
     tm 30 "$BUILD_DIR/tests/ft_fault_tool" check "$W/ck_stall/ckpt_4.h5" >>"$LOGS/fault_nccl_stall.log" 2>&1 &&
     [[ ! -e $W/ck_stall/ckpt_6.h5 ]]; then
    echo "  fault NCCL stall on CUDA: passed (exit $rc after ${dt} s in all, ckpt_4 valid and newest): $(grep -m1 -o "collective ncclAllReduce.*did not complete within 3 s" "$LOGS/fault_nccl_stall.log")" | tee -a "$TE"
  else
    fail=1
    echo "  fault NCCL stall on CUDA: FAILED ($(rc_text $rc) after ${dt} s; expected a non-zero exit naming the all-reduce, ckpt_4 valid)" | tee -a "$TE"
    tail -8 "$LOGS/fault_nccl_stall.log" >&2
  fi
  pack_logs
}
if [[ ${SKIP_TRAIN:-0} != 1 ]]; then
  train_case fp32
  train_case bf16
  gpu_faults
  # data parallel over every GPU (NCCL across GPUs, gradients all-reduced in bf16)
  (( NGPU > 1 )) && train_case bf16 "$NGPU" --grad-comm-dtype bf16
fi
# datasets/fashion-mnist-{train,test}.h5 from the IDX files --prepare packed into .gpudeps
# (xz -> gzip with python3, then `firetrain convert`); false if there are none or it fails.
fm_from_deps() {
  local d f rc
  compgen -G "$DEPS/fashion-mnist/*-ubyte.xz" >/dev/null || return 1
  log "converting the carried Fashion-MNIST files into datasets/"
  d=$(mktemp -d)
  for f in "$DEPS"/fashion-mnist/*-ubyte.xz; do
    "${PYENV[@]}" python3 -c 'import gzip, lzma, shutil, sys
with lzma.open(sys.argv[1]) as i, gzip.open(sys.argv[2], "wb", compresslevel=1) as o:
    shutil.copyfileobj(i, o)' "$f" "$d/$(basename "$f" .xz).gz" || { rm -rf "$d"; return 1; }
  done
  tm 120 "$FT" convert fashion-mnist "$d" "$ROOT/datasets" >"$LOGS/convert.log" 2>&1
  rc=$?
  rm -rf "$d"
  return $rc
}
# The main job's data (the carried IDX files converted on first use) and one run of it.
have_fm() {
  [[ -e $ROOT/datasets/fashion-mnist-train.h5 && -e $ROOT/datasets/fashion-mnist-test.h5 ]] ||
    fm_from_deps
}
mainjob_run() {  # PREC LIMIT_S LABEL LOGNAME [EXTRA FLAGS...]
  local prec=$1 lim=$2 label=$3 lg="$LOGS/$4" rc t0=$SECONDS
  shift 4
  log "main job on the GPU, $label (launch/fashion_mnist.cfg, 1 rank)"
  tm "$lim" "$FT" train --device cuda --precision "$prec" \
    --config "$ROOT/launch/fashion_mnist.cfg" --data "$ROOT/datasets/fashion-mnist-train.h5" \
    --val "$ROOT/datasets/fashion-mnist-test.h5" --progress plain "$@" \
    >"$lg" 2>&1
  rc=$?
  if is_timeout $rc && (( LIMIT < lim )); then  # cut short by the deadline, not its own limit
    oot=1
    echo "  main job $label: cut at ${LIMIT} s, $OOT [$((SECONDS - t0)) s]" | tee -a "$TE"
  elif (( rc != 0 )); then
    fail=1
    echo "  main job $label: FAILED ($(rc_text $rc)) [$((SECONDS - t0)) s]" | tee -a "$TE"
    tail -5 "$lg" >&2
  else
    echo "  main job $label: $(grep "final: val" "$lg" | tail -1)  [$((SECONDS - t0)) s]" \
      | tee -a "$TE"
  fi
  pack_logs
}
# One epoch of the main job on the GPU in bf16, right after the smoke tests (~20-40 s,
# estimated): --epochs 1 is the same config with its schedule over 1 epoch, comparable with the
# CPU's one-epoch run of the README's first command (test top-1 0.8007 on 2 ranks, the same
# global batch). The 15-epoch runs come last, if time is left (MAINJOB_MIN_S).
if [[ ${SKIP_TRAIN:-0} != 1 && ${SKIP_MAINJOB:-0} != 1 && ${BUILT[firetrain]:-0} == 1 ]] &&
   in_time "main job, 1 epoch"; then
  if have_fm; then
    mainjob_run bf16 80 "bf16, 1 epoch" mainjob_bf16_1epoch.log --epochs 1
  else
    echo "  main job, 1 epoch: skipped: no Fashion-MNIST files (datasets/*.h5 or .gpudeps)" | tee -a "$TE"
  fi
fi

# --- 5. the rest, while time is left ----------------------------------------------------------
# Per layer, firetrain vs PyTorch on the GPU (bench/layers_vs_torch.sh DEVICE=cuda: both sides
# wait for the GPU after every layer): where the step's time goes, bf16 then fp32.
LAYERS="$OUT/layers_gpu.txt"
layers_row() {  # PREC
  local rc
  need firetrain "layers $1" || return
  in_time "layers vs PyTorch $1" || { echo "# layers $1: $OOT" >>"$LAYERS"; return; }
  log "per-layer firetrain vs PyTorch on the GPU, squeezenet1_0 $1, batch $BATCH"
  tm 150 env FT="$FT" PY="${PYENV[*]} python3" DEVICE=cuda PRECISION="$1" BATCH="$BATCH" STEPS=5 \
    WARMUP=2 REPEATS=1 bash "$ROOT/bench/layers_vs_torch.sh" squeezenet1_0 >>"$LAYERS" 2>"$LOGS/layers_$1.err"
  rc=$?
  if (( rc != 0 )); then
    fail=1
    echo "# layers $1: FAILED ($(rc_text $rc)); layers_$1.err in logs.tgz" | tee -a "$LAYERS"
    tail -5 "$LOGS/layers_$1.err" >&2
  fi
  pack_logs
}
# Per kernel (bench/gpu_kernels.sh: Nsight Compute over one timed bf16 step): a diagnostic, so
# its failure (no ncu, no access to the counters) is reported but does not fail the check.
kernels_row() {
  local rc
  need firetrain "kernel profile" || return
  in_time "kernel profile (ncu)" || { echo "# kernel profile: $OOT" >>"$LAYERS"; return; }
  log "per-kernel profile of one squeezenet1_0 bf16 step (ncu)"
  tm 200 env FT="$FT" PY="${PYENV[*]} python3" PREC=bf16 BATCH="$BATCH" TOP=30 \
    bash "$ROOT/bench/gpu_kernels.sh" "$FT" >>"$LAYERS" 2>"$LOGS/kernels.err"
  rc=$?
  (( rc == 0 )) || echo "# kernel profile: not measured ($(rc_text $rc)); kernels.err in logs.tgz" | tee -a "$LAYERS"
  pack_logs
}
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  rm -f "$LAYERS"
  layers_row bf16
  layers_row fp32
  kernels_row
  [[ -s $LAYERS ]] && grep -E "^# (squeeze|layer|whole|[0-9]+ kernel launches|firetrain's own)|^  total" "$LAYERS"
fi
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  log "step benchmark (fp16, Fire concat copy vs zero-copy)"
  bench_row squeezenet1_0 fp16  # (fp16 on one arch only: the time budget)
  variant_row copy
fi
# The NCCL reducer at 1 rank: NCCL's in-place all-reduce on one rank has nothing to sum, so
# `bench comm` prints only the bucketed reducer and the 1-bucket reducer (the reducer's fixed
# overhead); it leaves out the nccl-tests-style floor row ("allreduce": ncclAllReduce back to
# back, CUDA-event timed) and the reducer/floor ratios at 1 rank, where the floor would be ~0
# (src/train/bench_comm.cpp). Those need >= 2 GPUs: mpirun -np N firetrain bench comm
# --device cuda on a multi-GPU node.
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  if ! need firetrain "bench comm"; then COMM_SUM="  skipped: firetrain not built"
  elif ! in_time "bench comm"; then COMM_SUM="  $OOT"; echo "# bench comm --device cuda: $OOT" >"$OUT/bench_comm_gpu.txt"
  else
    if (( NGPU > 1 )); then
      log "bench comm --device cuda, $NGPU ranks (one per GPU): reducer, 1-bucket and the nccl-tests-style floor"
      CPRE=("${MPI_PRE[@]}" -np "$NGPU")
    else
      log "bench comm --device cuda (1 rank: reducer and 1-bucket rows; no floor row at 1 rank)"
      CPRE=()
    fi
    tm 90 "${CPRE[@]}" "$FT" bench comm --device cuda --models squeezenet1_0,alexnet --grad-comm-dtype fp32,bf16 \
      --repeats 20 --warmup 3 \
      >"$OUT/bench_comm_gpu.txt" 2>&1
    rc=$?
    grep -E "^  |^# (squeeze|alex|Out)" "$OUT/bench_comm_gpu.txt"
    if (( rc != 0 )) || ! grep -q "^  " "$OUT/bench_comm_gpu.txt"; then
      fail=1
      COMM_SUM="  FAILED: $(rc_text $rc)"
      echo "gpu_check: bench comm: $(rc_text $rc); last lines:" >&2
      tail -5 "$OUT/bench_comm_gpu.txt" >&2
    fi
    pack_logs
  fi
fi
if [[ ${SKIP_TRAIN:-0} != 1 ]]; then
  train_case fp16
  eval_check
fi
# The main job on the GPU (1 rank, the README's config) where the Fashion-MNIST files are there
# (datasets/*.h5, or the IDX files --prepare packed): test top-1 and time, fp32 and bf16. Runs
# unless SKIP_MAINJOB=1 (also with SKIP_TRAIN=1: a call for the main job alone).
if [[ ${SKIP_MAINJOB:-0} == 1 ]]; then
  echo "  main job: skipped (SKIP_MAINJOB=1)" | tee -a "$TE"
elif [[ ${BUILT[firetrain]:-0} != 1 ]]; then
  echo "  main job: skipped: firetrain not built" | tee -a "$TE"
elif (( HARD_S - SECONDS < MAINJOB_MIN_S )); then
  oot=1
  echo "  main job: $OOT (one precision needs ~$MAINJOB_MIN_S s, $((HARD_S - SECONDS)) s were left;" \
    "run it alone: see MAINJOB_PREC in the header)" | tee -a "$TE"
elif ! have_fm; then
  echo "  main job: skipped: no datasets/fashion-mnist-{train,test}.h5 and no Fashion-MNIST files in .gpudeps" \
    "(or their conversion failed: convert.log)" | tee -a "$TE"
else
  for prec in ${MAINJOB_PREC:-fp32 bf16}; do
    if (( HARD_S - SECONDS < MAINJOB_MIN_S )) || ! in_time "main job $prec"; then
      oot=1
      echo "  main job $prec: $OOT" | tee -a "$TE"
      continue
    fi
    mainjob_run "$prec" 420 "$prec" "mainjob_$prec.log"
  done
fi

# --- the summary: every table, last (the device tool's output_tail holds the end) -------------
summary
exit $code
