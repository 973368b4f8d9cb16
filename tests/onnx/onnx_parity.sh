#!/usr/bin/env bash
# ctest onnx_parity_opencv: runs check_onnx_opencv.py with a python3 that has cv2 (the first of
# `python3` on PATH and /usr/bin/python3, the Debian one python3-opencv installs into); exit 77
# (skip) with the reason when there is none.
# Usage: onnx_parity.sh FIRETRAIN FT_ONNX_TOOL WORKDIR
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c "import cv2, numpy" >/dev/null 2>&1; then
    exec "$py" "$here/check_onnx_opencv.py" "$@"
  fi
done
echo "SKIP: no python3 with cv2 and numpy (apt-get install python3-opencv)"
exit 77
