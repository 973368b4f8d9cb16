#!/bin/bash
# Builds tests/fuzz/fuzz_readers.cpp with clang -fsanitize=fuzzer,address (with the reader
# sources: dataset, HDF5 helpers and sandbox, weights/checkpoints, inspect; the rest of firetrain
# comes uninstrumented from the build's libfiretrain_lib.a) and runs it for a bounded time on a
# seed corpus, after replaying every input in tests/fuzz/regressions/ (the fuzz binary, then the
# firetrain binary's `info` command on each: exit code 2 and one message).
# Strict: every HDF5 file is validated in a child process first (src/io/sandbox.cpp), so even
# the inputs that crash libhdf5 itself must give a clean ft::InputError; any finding (crash,
# abort, timeout, out-of-memory, sanitizer report, a non-input ft::Error), wherever it happens,
# fails the test.
# Usage: run_fuzz.sh SEED_TOOL [SECONDS] [FIRETRAIN_LIB] [FIRETRAIN_BINARY]
#   (exit 77 = skipped: no clang with libFuzzer). FIRETRAIN_LIB and FIRETRAIN_BINARY default
#   to the build directory above SEED_TOOL's (build/tests/ft_fuzz_seeds).
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SEEDS_TOOL=$1
SECONDS_TO_RUN=${2:-60}
BUILD=$(cd "$(dirname "$SEEDS_TOOL")/.." && pwd)
FT_LIB=${3:-$BUILD/libfiretrain_lib.a}
FT_BIN=${4:-$BUILD/firetrain}
CXX=${FT_FUZZ_CXX:-clang++}
command -v "$CXX" > /dev/null || { echo "SKIP: $CXX not found"; exit 77; }
[ -f "$FT_LIB" ] || { echo "FAIL: no firetrain library at $FT_LIB"; exit 1; }
WORK=$(mktemp -d /tmp/ft_fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' > "$WORK/probe.cpp"
"$CXX" -fsanitize=fuzzer "$WORK/probe.cpp" -o "$WORK/probe" 2> /dev/null ||
  { echo "SKIP: $CXX cannot build with -fsanitize=fuzzer"; exit 77; }
HDF5_CFLAGS=$(pkg-config --cflags hdf5-serial 2> /dev/null || pkg-config --cflags hdf5 2> /dev/null)
HDF5_LIBS=$(pkg-config --libs hdf5-serial 2> /dev/null || pkg-config --libs hdf5 2> /dev/null)
MPI_CFLAGS=$(mpicxx --showme:compile 2> /dev/null)
MPI_LIBS=$(mpicxx --showme:link 2> /dev/null)
# A CUDA build's library holds the CUDA backend too: ctest passes its libraries (cudart, cuBLAS,
# cuDNN, NCCL, with an rpath) in FT_FUZZ_EXTRA_LIBS. The fuzzer never calls them.
set -e
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address -DFIRETRAIN_VERSION='"fuzz"' -I"$SRC/include" \
  $HDF5_CFLAGS $MPI_CFLAGS "$SRC/tests/fuzz/fuzz_readers.cpp" "$SRC/src/data/dataset.cpp" \
  "$SRC/src/io/h5.cpp" "$SRC/src/io/sandbox.cpp" "$SRC/src/io/weights.cpp" \
  "$SRC/src/core/error.cpp" "$SRC/src/core/params.cpp" "$SRC/src/io/inspect.cpp" \
  "$FT_LIB" -ldnnl -fopenmp -lpng -ljpeg -lz $HDF5_LIBS $MPI_LIBS ${FT_FUZZ_EXTRA_LIBS:-} \
  -o "$WORK/fuzz_readers"
set +e
mkdir -p "$WORK/corpus"
"$SEEDS_TOOL" "$WORK/corpus" || { echo "FAIL: seed corpus"; exit 1; }
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
# A child still reading after 3 s is a hang (the fuzz inputs are at most 16 KiB); libFuzzer's
# own limit (-timeout=20) stays above the few children one input starts.
export FIRETRAIN_H5_SANDBOX_TIMEOUT=3
fail=0
# Regression inputs (findings of earlier runs, several of them crashes inside libhdf5 1.10.8)
# must give clean errors: through the fuzz target (sanitized) ...
if compgen -G "$SRC/tests/fuzz/regressions/*" > /dev/null; then
  if ! "$WORK/fuzz_readers" -runs=0 "$SRC"/tests/fuzz/regressions/* > "$WORK/regress.log" 2>&1; then
    echo "FAIL: a regression input is not rejected cleanly:"
    grep -E "FUZZ FINDING|ERROR|SUMMARY|Running:" "$WORK/regress.log" | tail -20
    fail=1
  fi
  # ... and through the (unsanitized) firetrain binary, as a user runs it: exit 2 and one
  # message, never a signal or a hang. Exit 0 is tolerated: without a sanitizer, a memory error
  # inside libhdf5 that does not crash (h5aexists_use_after_free.h5 reads freed memory) cannot
  # be seen, in the child or anywhere; the sanitized replay above rejects it.
  if [ -x "$FT_BIN" ]; then
    for r in "$SRC"/tests/fuzz/regressions/*; do
      out=$(OMP_NUM_THREADS=1 timeout 60 "$FT_BIN" info "$r" 2>&1)
      code=$?
      if { [ $code -ne 2 ] || [ "$(grep -c error <<< "$out")" -ne 1 ]; } && [ $code -ne 0 ]; then
        echo "FAIL: firetrain info $(basename "$r"): exit $code (expected 2 and one message):"
        echo "$out" | head -5
        fail=1
      fi
    done
  else
    echo "FAIL: no firetrain binary at $FT_BIN"
    fail=1
  fi
  [ $fail -eq 0 ] && echo "regressions: $(ls "$SRC"/tests/fuzz/regressions | wc -l) inputs rejected cleanly"
fi
cd "$WORK"
# Fork mode: keep fuzzing after a finding, so that one run sees several; each is replayed below.
"$WORK/fuzz_readers" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -max_total_time="$SECONDS_TO_RUN" -max_len=16384 -rss_limit_mb=2048 -timeout=20 \
  "$WORK/corpus" > "$WORK/fuzz.log" 2>&1
rc=$?
grep -E "^#[0-9]+: cov|INFO: fuzzed for|DONE" "$WORK/fuzz.log" | tail -3
# Every finding is kept in /tmp/ft_fuzz_findings/ (small files: add it to tests/fuzz/regressions/
# once fixed), replayed and reported with the first frame outside the sanitizer and libc.
# A crash or leak fails the test even when its replay passes. A timeout or out-of-memory whose
# replay passes is reported only: the machine was busy, or a validation child (which inherits
# libFuzzer's malloc limit hook) allocated too much and wrote the artifact itself.
findings=0
mkdir -p /tmp/ft_fuzz_findings
for c in "$WORK"/crash-* "$WORK"/timeout-* "$WORK"/oom-* "$WORK"/leak-*; do
  [ -e "$c" ] || continue
  cp "$c" /tmp/ft_fuzz_findings/
  "$WORK/fuzz_readers" -runs=1 -timeout=20 -rss_limit_mb=2048 "$c" > "$WORK/replay.log" 2>&1
  replay=$?
  case $(basename "$c") in
    timeout-* | oom-*)
      if [ $replay -eq 0 ]; then
        echo "did not reproduce (not counted): /tmp/ft_fuzz_findings/$(basename "$c")"
        continue
      fi ;;
  esac
  findings=$((findings + 1))
  frame=$(grep -E "^ +#[0-9]+ 0x" "$WORK/replay.log" |
          grep -vE "__interceptor_|__asan|__sanitizer|__lsan|fuzzer::|libc\.so|in malloc|in calloc|in realloc|in operator new|PrintStack|AlarmCallback|MallocHook|HandleMalloc|in abort|in raise" |
          head -1)
  echo "FINDING: /tmp/ft_fuzz_findings/$(basename "$c") (replay exit $replay) at:${frame#*in}"
  grep -E "FUZZ FINDING|ERROR|SUMMARY|^ +#[0-9]+ 0x" "$WORK/replay.log" | head -12
done
echo "fuzzed ${SECONDS_TO_RUN} s: $findings finding(s), fuzzer exit $rc"
if [ $fail -eq 0 ] && [ $findings -eq 0 ] && [ $rc -eq 0 ]; then
  echo "PASS: every input rejected cleanly or read, no crash or hang anywhere in ${SECONDS_TO_RUN} s"
  exit 0
fi
echo "FAIL: $findings finding(s), fuzzer exit $rc, regressions ok: $([ $fail -eq 0 ] && echo yes || echo no)"
tail -20 "$WORK/fuzz.log"
exit 1
