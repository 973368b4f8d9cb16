#!/bin/bash
# Builds tests/fuzz/fuzz_readers.cpp with clang -fsanitize=fuzzer,address (with the reader
# sources: dataset, HDF5 helpers, weights/checkpoints) and runs it for a bounded time on a seed
# corpus, then replays every regression input in tests/fuzz/regressions/.
# Usage: run_fuzz.sh SEED_TOOL [SECONDS]   (exit 77 = skipped: no clang with libFuzzer)
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SEEDS_TOOL=$1
SECONDS_TO_RUN=${2:-60}
CXX=${FT_FUZZ_CXX:-clang++}
command -v "$CXX" > /dev/null || { echo "SKIP: $CXX not found"; exit 77; }
WORK=$(mktemp -d /tmp/ft_fuzz.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' > "$WORK/probe.cpp"
"$CXX" -fsanitize=fuzzer "$WORK/probe.cpp" -o "$WORK/probe" 2> /dev/null ||
  { echo "SKIP: $CXX cannot build with -fsanitize=fuzzer"; exit 77; }
HDF5_CFLAGS=$(pkg-config --cflags hdf5-serial 2> /dev/null || pkg-config --cflags hdf5 2> /dev/null)
HDF5_LIBS=$(pkg-config --libs hdf5-serial 2> /dev/null || pkg-config --libs hdf5 2> /dev/null)
MPI_CFLAGS=$(mpicxx --showme:compile 2> /dev/null)
MPI_LIBS=$(mpicxx --showme:link 2> /dev/null)
set -e
"$CXX" -std=c++17 -O1 -g -fsanitize=fuzzer,address -DFIRETRAIN_VERSION='"fuzz"' -I"$SRC/include" \
  $HDF5_CFLAGS $MPI_CFLAGS "$SRC/tests/fuzz/fuzz_readers.cpp" "$SRC/src/data/dataset.cpp" \
  "$SRC/src/io/h5.cpp" "$SRC/src/io/weights.cpp" "$SRC/src/core/error.cpp" \
  "$SRC/src/core/params.cpp" "$SRC/src/model/fire.cpp" "$SRC/src/io/inspect.cpp" $HDF5_LIBS $MPI_LIBS -o "$WORK/fuzz_readers"
set +e
mkdir -p "$WORK/corpus"
"$SEEDS_TOOL" "$WORK/corpus" || { echo "FAIL: seed corpus"; exit 1; }
export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
# Regression inputs (crashes found earlier) must stay fixed.
if compgen -G "$SRC/tests/fuzz/regressions/*" > /dev/null; then
  "$WORK/fuzz_readers" -runs=0 "$SRC"/tests/fuzz/regressions/* || { echo "FAIL: a regression input crashes"; exit 1; }
fi
cd "$WORK"
"$WORK/fuzz_readers" -max_total_time="$SECONDS_TO_RUN" -max_len=16384 -rss_limit_mb=2048 \
  -timeout=20 -print_final_stats=1 "$WORK/corpus" 2>&1 | tail -25
rc=${PIPESTATUS[0]}
for c in "$WORK"/crash-* "$WORK"/timeout-* "$WORK"/oom-*; do
  [ -e "$c" ] && { mkdir -p /tmp/ft_fuzz_findings; cp "$c" /tmp/ft_fuzz_findings/; echo "finding: /tmp/ft_fuzz_findings/$(basename "$c")"; }
done
[ $rc -eq 0 ] && echo "PASS: no crash in ${SECONDS_TO_RUN} s" || echo "FAIL: fuzzer exit $rc"
exit $rc
