"""Python onnxruntime peer for the per-network benches: the same ONNX files and the same real
inputs as `facerec bench models` (models/parity/*.png, cycled to fill a batch).

Prints one JSON object per (net, threads, batch): items/s from the median of repeated timed
`session.run` calls (outputs are numpy arrays, so every call's results are on the host).
usage: python3 benches/ort_nets.py [--nets recognition,ssd,tiny,landmarks] [--threads 1,2]
                                   [--batches 1,16,64] [--seconds 3]
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
NETS = {
    "recognition": ("face_recognition.onnx", [f"recognition_input_{i}.png" for i in range(3)]),
    "ssd": ("ssd_mobilenetv1.onnx", ["ssd_input.png"]),
    "tiny": ("tiny_face_detector.onnx", ["tiny_input.png"]),
    "landmarks": ("face_landmark_68.onnx", ["landmark_input_0.png", "landmark_input_1.png"]),
}


def inputs(files):
    out = []
    for f in files:
        img = Image.open(os.path.join(ROOT, "models", "parity", f)).convert("RGB")
        out.append(np.asarray(img, np.float32).transpose(2, 0, 1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    for net in a.nets.split(","):
        model, files = NETS[net]
        c = inputs(files)
        for threads in [int(t) for t in a.threads.split(",")]:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            # The same spinning policy as facerec's pool (FACEREC_ORT_SPIN, default off).
            spin = os.environ.get("FACEREC_ORT_SPIN", "0") in ("1", "true")
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
            sess = ort.InferenceSession(os.path.join(ROOT, "models", model), so,
                                        providers=["CPUExecutionProvider"])
            for batch in [int(b) for b in a.batches.split(",")]:
                x = np.stack([c[i % len(c)] for i in range(batch)])
                for _ in range(2):
                    sess.run(None, {"input": x})
                times = []
                start = time.perf_counter()
                while time.perf_counter() - start < a.seconds or len(times) < 3:
                    t = time.perf_counter()
                    sess.run(None, {"input": x})
                    times.append(time.perf_counter() - t)
                med = statistics.median(times)
                print(json.dumps({"peer": "onnxruntime", "version": ort.__version__, "net": net,
                                  "threads": threads, "batch": batch, "seconds_per_batch": med,
                                  "items_per_s": batch / med}), flush=True)


if __name__ == "__main__":
    main()
