"""onnxruntime peer for the embedding bench: the same ONNX file (models/face_recognition.onnx),
the same real chips (models/parity/recognition_input_*.png), batch 1/16/64.

Prints one JSON object per (threads, batch): images/s, median over repeated timed runs.
usage: python3 benches/ort_embed.py [--threads 1,2] [--seconds 3]
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def chips():
    out = []
    for i in range(3):
        img = Image.open(os.path.join(ROOT, "models", "parity", f"recognition_input_{i}.png")).convert("RGB")
        out.append(np.asarray(img, np.float32).transpose(2, 0, 1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    c = chips()
    for threads in [int(t) for t in a.threads.split(",")]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(os.path.join(ROOT, "models", "face_recognition.onnx"), so,
                                    providers=["CPUExecutionProvider"])
        for batch in (1, 16, 64):
            x = np.stack([c[i % len(c)] for i in range(batch)])
            for _ in range(3):
                sess.run(None, {"input": x})
            times = []
            start = time.perf_counter()
            while time.perf_counter() - start < a.seconds or len(times) < 5:
                t = time.perf_counter()
                sess.run(None, {"input": x})
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(json.dumps({"peer": "onnxruntime", "version": ort.__version__, "threads": threads,
                              "batch": batch, "seconds_per_batch": med, "images_per_s": batch / med}))


if __name__ == "__main__":
    main()
