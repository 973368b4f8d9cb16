#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, builds firetrain with the CUDA backend, runs
# every GPU test (CPU-vs-CUDA parity of every op and of whole training steps, NCCL all-reduce
# with exact values), then the GPU step benchmark of SqueezeNet 1.0 and 1.1 at 224x224 side by
# side with PyTorch (torchvision's models, channels_last, on the same GPU, in the same run), and
# prints a table with the ratios; then the NCCL reducer against nccl-tests' measure (1 rank), the
# trainer end to end on the GPU and, where the Fashion-MNIST files are there, the main job.
# Budget: build ~2-3 min with 16 cores for one architecture, tests ~1-2 min, step benchmark
# ~3-4 min, training ~3 min: more than one 10-minute device call; split it (below).
#
# With the `device` tool (15 min of device time per task, <= 10 min per command, <= 64 MiB
# carried; the tree is ~10 MB):
#   here, once:  tests/gpu_check.sh --prepare      (29 MB of Debian packages into .gpudeps/)
#   call 1:      SKIP_BENCH=1 SKIP_TRAIN=1 tests/gpu_check.sh          carry [".gpudeps"]
#   call 2, at once (the machine is still warm: build-gpu/ and /tmp/ftsys are still there):
#                SKIP_TESTS=1 tests/gpu_check.sh   carry ["datasets/fashion-mnist-train.h5",
#                                                         "datasets/fashion-mnist-test.h5"] (32 MB)
#   (if the machine was given back in between, call 2 must carry .gpudeps again and then has no
#   room for the datasets: add SKIP_MAINJOB=1)
# The device tool brings back at most 8 files of $OUT: the script writes 5 summaries there
# (gpu_check.log, parity_errors.txt, bench_gpu.txt, bench_comm_gpu.txt, train_eval.txt) and
# logs.tgz, refreshed after every section, with the detailed logs. First attempt on a short
# lease: add SKIP_MAINJOB=1 (and STEPS=5) to call 2.
#
# Usage: tests/gpu_check.sh              build + tests + benchmarks; logs and tables in $OUT
#                                        (default gpu-check-out/)
#        tests/gpu_check.sh --prepare    on a Debian 12 machine with apt: download the Debian
#                                        packages the build needs into .gpudeps/ (for a GPU
#                                        machine that cannot reach a package archive)
# Env:   CUDA_ARCH (default 90: Hopper; 80 for A100), BATCH (256), STEPS (10), JOBS (nproc),
#        SKIP_BENCH=1 / SKIP_TESTS=1 / SKIP_TRAIN=1 / SKIP_MAINJOB=1 (e.g. tests in one device
#        call, then the benchmark and the training runs in a
#        second call on the still-warm machine, which reuses BUILD_DIR), BUILD_DIR (build-gpu)
# Exit:  0 everything passed; 1 a build, test, benchmark or training step failed, or the GPU
#        tests skipped for want of a GPU (e.g. a driver too old for the toolkit); 2 no CUDA
#        toolkit, no CUDA backend configured, or missing dependencies.
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

if [[ ${1:-} == --prepare ]]; then
  mkdir -p "$DEPS" && cd "$DEPS" && apt-get download "${PKGS[@]}" && du -sh "$DEPS" || exit 1
  grep -qx '/.gpudeps/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpudeps/' >>"$ROOT/.git/info/exclude"
  exit $?
fi

OUT="${OUT:-$ROOT/gpu-check-out}"
mkdir -p "$OUT"
# $OUT holds at most 6 files (the device tool returns 8): the summaries gpu_check.log,
# parity_errors.txt, bench_gpu.txt, bench_comm_gpu.txt, train_eval.txt, and logs.tgz, which
# packs the detailed logs (written to $LOGS) after every section and at exit, so that a run
# killed at its time limit still returns what it had.
LOGS=$(mktemp -d /tmp/gpu_check_logs.XXXXXX)
pack_logs() { tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null; }
trap pack_logs EXIT
BUILD_DIR="${BUILD_DIR:-$ROOT/build-gpu}"
JOBS="${JOBS:-$(nproc)}"
log() { echo "== $(date +%T) $*" | tee -a "$OUT/gpu_check.log"; }

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt"
export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || { echo "gpu_check: no nvcc (CUDA toolkit) found" >&2; exit 2; }

# Dependencies: the system's (as launch/setup.sh installs them), else the carried .gpudeps/
# (extracted once into /tmp/ftsys: a second call on the still-warm machine reuses it and need
# not carry .gpudeps again).
CMAKE_EXTRA=()
ORIG_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"  # for python3 (PyTorch): not the Debian libraries
if [[ ! -e /usr/include/oneapi/dnnl/dnnl.hpp ]] || ! command -v mpicc >/dev/null; then
  SYS=/tmp/ftsys
  if [[ ! -e $SYS/.complete ]]; then
    [[ -d $DEPS ]] || { echo "gpu_check: oneDNN/MPI/HDF5 missing; run launch/setup.sh, or run" \
      "'tests/gpu_check.sh --prepare' where apt works and carry .gpudeps/" >&2; exit 2; }
    log "extracting $(ls "$DEPS"/*.deb | wc -l) Debian packages into $SYS"
    for f in "$DEPS"/*.deb; do
      dpkg-deb -x "$f" "$SYS" || { echo "gpu_check: cannot extract $f" >&2; exit 2; }
    done
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
  CMAKE_EXTRA+=(-DCMAKE_PREFIX_PATH="$SYS/usr" -DMPI_C_COMPILER="$SYS/usr/bin/mpicc.openmpi"
    -DMPI_C_HEADER_DIR="$L/openmpi/include" -DMPI_C_LIB_NAMES=mpi -DMPI_mpi_LIBRARY="$L/openmpi/lib/libmpi.so"
    -DHDF5_C_INCLUDE_DIR="$SYS/usr/include/hdf5/serial" -DHDF5_C_LIBRARY_hdf5="$L/hdf5/serial/libhdf5.so"
    -DHDF5_INCLUDE_DIRS="$SYS/usr/include/hdf5/serial" -DHDF5_C_LIBRARIES="$L/hdf5/serial/libhdf5.so"
    -DHDF5_FOUND=ON -DDNNL_LIB="$L/libdnnl.so" -DDNNL_INCLUDE="$SYS/usr/include"
    -DGTEST_ROOT="$SYS/usr")
fi
# cuDNN and NCCL: the toolkit's, else the nvidia-cudnn / nvidia-nccl Python wheels' (PyTorch's).
if [[ ! -e /usr/local/cuda/include/cudnn.h ]]; then
  export CUDNN_ROOT=$(LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" python3 -c 'import nvidia.cudnn as m; print(m.__path__[0])' 2>/dev/null)
  export NCCL_ROOT=$(LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" python3 -c 'import nvidia.nccl as m; print(m.__path__[0])' 2>/dev/null)
  export LD_LIBRARY_PATH="$CUDNN_ROOT/lib:$NCCL_ROOT/lib:${LD_LIBRARY_PATH:-}"
fi

log "configure + build ($BUILD_DIR, sm_${CUDA_ARCH:-90}, $JOBS jobs)"
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFIRETRAIN_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" "${CMAKE_EXTRA[@]}" >"$LOGS/cmake.log" 2>&1 \
  || { tail -30 "$LOGS/cmake.log"; exit 2; }
grep -E "^-- firetrain:" "$LOGS/cmake.log" | tee -a "$OUT/gpu_check.log"
grep -q "building the CUDA backend" "$LOGS/cmake.log" || { echo "gpu_check: CUDA backend not configured" >&2; exit 2; }
cmake --build "$BUILD_DIR" -j "$JOBS" --target firetrain firetrain_tests firetrain_mpi_tests ft_fault_tool \
  >"$LOGS/build.log" 2>&1 || { tail -40 "$LOGS/build.log"; exit 1; }
pack_logs
FT="$BUILD_DIR/firetrain"
"$FT" --version | tee -a "$OUT/gpu_check.log"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fail=0
# A test binary's result counts only with its exit code 0 AND gtest's summary line (a crash
# prints no FAILED line), and a "no GPU" skip is a failure here (e.g. a driver too old for the
# toolkit makes cudaGetDeviceCount fail, which the library reports as 0 GPUs).
gtest_ok() {  # log file, exit code, what
  local log=$1 rc=$2 what=$3
  if (( rc != 0 )) || ! grep -q "^\[  PASSED  \] " "$log"; then
    echo "gpu_check: $what: exit code $rc$(grep -q '^\[  PASSED  \] ' "$log" || echo ', no gtest summary (crashed?)')" >&2
    return 1
  fi
  if grep -q "^\[  PASSED  \] 0 tests" "$log"; then
    echo "gpu_check: $what: no test ran (filter?)" >&2
    return 1
  fi
  if grep -qE "^(no GPU visible|CUDA backend not built|needs one GPU per rank)" "$log"; then
    echo "gpu_check: $what: tests skipped for want of a GPU: $(grep -cE '^\[  SKIPPED \] ' "$log") skipped" >&2
    return 1
  fi
}
if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  log "GPU tests: op parity (CudaOps, fp32 and 16-bit), whole steps (Archs/CudaNet, Archs/CudaHalfNet)"
  OMP_NUM_THREADS=4 "$BUILD_DIR/tests/firetrain_tests" --gtest_filter='Cuda*:*/Cuda*' >"$LOGS/tests_cuda.log" 2>&1
  rc=$?
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |OK \]|FAILED \]" "$LOGS/tests_cuda.log"
  gtest_ok "$LOGS/tests_cuda.log" $rc "CUDA op/step tests" || fail=1
  grep "\[ measured \]" "$LOGS/tests_cuda.log" > "$OUT/parity_errors.txt"
  echo "parity errors measured: $(wc -l < "$OUT/parity_errors.txt") lines in $OUT/parity_errors.txt (CPU vs CUDA, norm-wise)"
  log "NCCL all-reduce test (1 rank; more ranks need more GPUs)"
  "$BUILD_DIR/tests/firetrain_mpi_tests" --gtest_filter='MpiNccl*:MpiReducer*' >"$LOGS/tests_nccl.log" 2>&1
  rc=$?
  grep -E "PASSED|FAILED|SKIPPED" "$LOGS/tests_nccl.log"
  gtest_ok "$LOGS/tests_nccl.log" $rc "NCCL tests" || fail=1
  pack_logs
fi

if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  BATCH="${BATCH:-256}" STEPS="${STEPS:-10}"
  log "step benchmark: batch $BATCH, 224x224, median of $STEPS steps"
  T="$OUT/bench_gpu.txt"
  printf "# firetrain vs PyTorch on %s: one training step (fwd+loss+bwd+SGD), batch %d, 224x224, median of %d steps\n" \
    "$(cat "$LOGS/gpu.txt" 2>/dev/null | cut -d, -f1)" "$BATCH" "$STEPS" | tee "$T"
  printf "# %-14s %-9s %10s %10s %10s %10s %7s\n" arch precision ft_ms ft_img/s pt_ms pt_img/s ratio | tee -a "$T"
  for arch in squeezenet1_0 squeezenet1_1; do
    precs="fp32 bf16 fp16"
    [[ $arch == squeezenet1_1 ]] && precs="fp32 bf16"  # (fp16 on one arch: the 8-minute budget)
    for prec in $precs; do
      ft_ms=$("$FT" bench step --device cuda --precision "$prec" --arch "$arch" --batch "$BATCH" \
        --size 224 --steps "$STEPS" --warmup 5 2>>"$LOGS/bench.err" | awk '!/^#/ {print $5}')
      pt_ms=$(LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" python3 "$ROOT/bench/torch_gpu_step.py" --arch "$arch" --batch "$BATCH" --steps "$STEPS" \
        --precision "$prec" 2>>"$LOGS/bench.err" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')
      awk -v a="$arch" -v p="$prec" -v f="${ft_ms:-0}" -v t="${pt_ms:-0}" -v b="$BATCH" 'BEGIN {
        printf "  %-14s %-9s %10s %10s %10.2f %10.1f %7s\n", a, p,
          (f > 0 ? sprintf("%.2f", f) : "n/a"), (f > 0 ? sprintf("%.1f", b * 1000 / f) : "n/a"),
          t, (t > 0 ? b * 1000 / t : 0), (f > 0 && t > 0 ? sprintf("%.2f", t / f) : "n/a") }' | tee -a "$T"
      [[ $arch == squeezenet1_0 && $prec == bf16 ]] && zc_ms=$ft_ms
    done
  done
  # The zero-copy Fire concat (two-part 1x1 convolutions as cuBLAS GEMMs on the parts, the
  # default) against copying the concat for cuDNN (FT_CONV_TWO_PART=copy), in the same run.
  cp_ms=$(FT_CONV_TWO_PART=copy "$FT" bench step --device cuda --precision bf16 --arch squeezenet1_0 \
    --batch "$BATCH" --size 224 --steps "$STEPS" --warmup 5 2>>"$LOGS/bench.err" | awk '!/^#/ {print $5}')
  awk -v z="${zc_ms:-0}" -v c="${cp_ms:-0}" 'BEGIN {
    printf "# squeezenet1_0 bf16, Fire concat copied (FT_CONV_TWO_PART=copy): %s ms; zero-copy: %s ms; copy/zero-copy %s\n",
      (c > 0 ? sprintf("%.2f", c) : "n/a"), (z > 0 ? sprintf("%.2f", z) : "n/a"),
      (c > 0 && z > 0 ? sprintf("%.2f", c / z) : "n/a") }' | tee -a "$T"
  echo "# ratio = PyTorch ms / firetrain ms (> 1: firetrain faster); n/a: that side failed (see $LOGS/bench.err)" | tee -a "$T"
  echo "# PyTorch: torchvision model, channels_last, autocast bf16/fp16 (fp16 with GradScaler), TF32 off for fp32;" \
    "firetrain's bench step runs no loss scaling (one scale+check pass over 1.2 M gradients: negligible)" | tee -a "$T"
fi
# The NCCL reducer against nccl-tests' measure of ncclAllReduce on the same bytes (1 rank here:
# NCCL's all-reduce is then a local copy, so this shows the reducer's fixed overhead; run it
# under mpirun on a multi-GPU node for the real comparison).
if [[ ${SKIP_BENCH:-0} != 1 ]]; then
  log "bench comm --device cuda (1 rank)"
  "$FT" bench comm --device cuda --models squeezenet1_0,alexnet --repeats 20 --warmup 3 \
    2>&1 | tee "$OUT/bench_comm_gpu.txt" | grep -E "^  |^# (squeeze|alex|Out)" || fail=1
  pack_logs
fi

# The trainer end to end on the GPU (1 rank: NCCL, uploads, checkpoints, resume, eval).
if [[ ${SKIP_TRAIN:-0} != 1 ]]; then
  log "train smoke test: synthetic 28x28 data, 60 steps per precision, stop at 30 + resume"
  W=$(mktemp -d)
  "$BUILD_DIR/tests/ft_fault_tool" dataset "$W/d.h5" 512 28 1 10 >/dev/null
  for prec in fp32 bf16 fp16; do
    A=(train --device cuda --precision "$prec" --data "$W/d.h5" --val "$W/d.h5" --batch 64
       --steps 60 --lr 0.01 --warmup-steps 5 --log-every 10 --progress plain
       --checkpoint-dir "$W/ck_$prec" --checkpoint-every 10)
    if "$FT" "${A[@]}" --stop-at 30 >"$LOGS/train_$prec.log" 2>&1 &&
       "$FT" "${A[@]}" --resume auto >>"$LOGS/train_$prec.log" 2>&1 &&
       grep -q "resumed from" "$LOGS/train_$prec.log"; then
      echo "  $prec: $(grep -E 'final: val' "$LOGS/train_$prec.log" | tail -1)"
    else
      echo "gpu_check: train smoke test failed in $prec (see $LOGS/train_$prec.log)" >&2
      tail -5 "$LOGS/train_$prec.log" >&2
      fail=1
    fi
  done
  # eval of the fp32 checkpoint: the GPU's top-1 and loss against the CPU's on the same
  # weights (top-1 within one image of 512, loss within 1e-3 relative: fp32 on both).
  declare -A top1 loss
  for d in cuda cpu; do
    line=$("$FT" eval --device $d --weights "$W/ck_fp32/ckpt_60.h5" --data "$W/d.h5" 2>&1 | tail -1)
    echo "  eval --device $d: $line" | tee -a "$OUT/train_eval.txt"
    top1[$d]=$(sed -n 's/.*top-1 \([0-9.]*\).*/\1/p' <<<"$line")
    loss[$d]=$(sed -n 's/.*loss \([0-9.]*\).*/\1/p' <<<"$line")
  done
  if [[ -z ${top1[cuda]} || -z ${top1[cpu]} ]] || ! awk -v a="${top1[cuda]}" -v b="${top1[cpu]}" \
       -v la="${loss[cuda]}" -v lb="${loss[cpu]}" 'BEGIN { d = a - b; e = la - lb;
         exit !((d < 0 ? -d : d) <= 1.0 / 512 + 1e-9 && (e < 0 ? -e : e) <= 1e-3 * lb + 1e-6) }'; then
    echo "gpu_check: eval on the GPU differs from the CPU (or failed)" | tee -a "$OUT/train_eval.txt" >&2
    fail=1
  fi
  rm -rf "$W"
  # The main job on the GPU (1 rank, the README's config) where the Fashion-MNIST files were
  # carried (datasets/*.h5, 32 MB): test top-1 and time, fp32 and bf16.
  if [[ -e $ROOT/datasets/fashion-mnist-train.h5 && ${SKIP_MAINJOB:-0} != 1 ]]; then
    for prec in fp32 bf16; do
      log "main job on the GPU, $prec (launch/fashion_mnist.cfg, 1 rank)"
      t0=$(date +%s.%N)
      "$FT" train --device cuda --precision "$prec" \
        --config "$ROOT/launch/fashion_mnist.cfg" --data "$ROOT/datasets/fashion-mnist-train.h5" \
        --val "$ROOT/datasets/fashion-mnist-test.h5" --progress plain >"$LOGS/mainjob_$prec.log" 2>&1 \
        || fail=1
      echo "  $prec: $(grep "final: val" "$LOGS/mainjob_$prec.log" | tail -1)  [$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s]" \
        | tee -a "$OUT/train_eval.txt"
      pack_logs
    done
  fi
  pack_logs
fi
log "done (fail=$fail); logs in $OUT"
exit $fail
