#!/usr/bin/env python3
"""ONNX parity: `firetrain export --format onnx` loaded in OpenCV's dnn module must reproduce
`firetrain predict` on the same weights and inputs.

For each case: export the same fresh weights (fixed seed) twice, as torch-h5 and as ONNX; make
an HDF5 dataset of random float32 images (ft_onnx_tool, which also writes them as raw NCHW);
run `firetrain predict`; run cv2.dnn.readNetFromONNX on the raw images; compare the logits:
max |opencv - firetrain| / max |firetrain| <= 1e-4 (error relative to the largest logit of
the case). If python3-onnx is importable, onnx.checker.check_model(full_check=True) must pass
too (optional; not for AlexNet, whose 244 MB take ~10 s to check). Exit 0 all passed, 1 a failure, 77 (ctest SKIP_RETURN_CODE) without cv2.

usage: check_onnx_opencv.py FIRETRAIN FT_ONNX_TOOL WORKDIR
"""
import os
import subprocess
import sys
import time

try:
    import cv2
    import numpy as np
except ImportError as e:
    print(f"SKIP: python3 cannot import cv2/numpy ({e}); install python3-opencv")
    sys.exit(77)

TOL = 1e-4

# (arch, bypass, channels, size, classes, images)
CASES = [
    ("squeezenet1_0", "none", 3, 224, 1000, 4),
    ("alexnet", "none", 3, 224, 1000, 2),
    ("squeezenet1_1", "complex", 3, 113, 100, 3),
    ("squeezenet_small", "simple", 1, 28, 10, 8),
]


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(f"FAIL: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}")
        sys.exit(1)
    return r.stdout


def main():
    ft, tool, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    try:
        import onnx
        import onnx.checker
    except ImportError:
        onnx = None
        print("note: python3-onnx not importable: onnx.checker step skipped")
    print(f"OpenCV {cv2.__version__}, tolerance {TOL} relative to max |logit|")
    failed = False
    for arch, bypass, c, s, k, n in CASES:
        t0 = time.time()
        tag = f"{arch}-{bypass}-{s}"
        w, m = f"{work}/{tag}.h5", f"{work}/{tag}.onnx"
        data, raw = f"{work}/{tag}-data.h5", f"{work}/{tag}-x.f32"
        logits, lraw = f"{work}/{tag}-logits.h5", f"{work}/{tag}-logits.f32"
        common = ["--arch", arch, "--bypass", bypass, "--in-channels", str(c), "--size", str(s),
                  "--num-classes", str(k), "--seed", "1234"]
        run([ft, "export", *common, "--out", w])
        run([ft, "export", "--format", "onnx", *common, "--out", m])
        run([tool, "dataset", data, raw, str(n), str(c), str(s), str(s), str(k), "5"])
        run([ft, "predict", "--weights", w, "--data", data, "--out", logits, "--threads", "1"])
        shape = [int(v) for v in run([tool, "logits", logits, lraw]).split()]
        ref = np.fromfile(lraw, dtype="<f4").reshape(shape)
        x = np.fromfile(raw, dtype="<f4").reshape(n, c, s, s)
        if onnx is not None and arch != "alexnet":  # (its 244 MB take ~10 s to check)
            onnx.checker.check_model(onnx.load(m), full_check=True)
        net = cv2.dnn.readNetFromONNX(m)
        net.setInput(x)
        got = net.forward().reshape(n, -1)
        if got.shape != ref.shape:
            print(f"FAIL {tag}: OpenCV logits {got.shape}, firetrain {ref.shape}")
            failed = True
            continue
        scale = float(np.abs(ref).max())
        err = float(np.abs(got - ref).max()) / scale if scale > 0 else float("inf")
        same_top1 = bool((got.argmax(1) == ref.argmax(1)).all())
        ok = err <= TOL and scale > 0
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {tag}: {n} images, {k} classes, max|logit| {scale:.4g}, "
              f"max rel err {err:.3g}, top-1 agrees: {same_top1} ({time.time() - t0:.1f} s)")
        for f in (w, m, data, raw, logits, lraw):
            os.remove(f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
