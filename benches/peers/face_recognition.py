#!/usr/bin/env python3
"""The peer a user would pick instead: ageitgey's `face_recognition` (dlib's HOG detector,
68-point shape predictor and ResNet descriptor), on the same images as facerec.

    python3 benches/peers/face_recognition.py --gallery DIR --expected CSV [--procs 2] IMAGE...

DIR holds one sub-folder per person (as `facerec enroll --dir`): the first face of each image
there is enrolled. Each image is identified as its largest face's nearest enrolled face within
dlib's conventional tolerance (0.6), else `unknown`; an image where the HOG detector finds no
face is used whole (the same whole-frame fallback facerec has for pre-cropped faces), so the
64x64 CSE546 crops are answered at all. Work is split over `--procs` processes, one image at a
time each (dlib runs single-threaded). Prints one JSON object: images, seconds, images/s, and
with --expected the number answered as the CSV says.

Install (PyPI, no compiler needed): `python3 -m pip install dlib-bin==20.0.1.post1
face_recognition_models==0.3.0 && python3 -m pip install --no-deps face_recognition==1.3.0`.
"""
import argparse
import csv
import json
import multiprocessing as mp
import os
import time

import sys

# This file shares the package's name: import the package, not this script.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import numpy as np  # noqa: E402

TOLERANCE = 0.6

_known = None


def _encodings(path):
    import face_recognition as fr

    img = fr.load_image_file(path)
    boxes = fr.face_locations(img)
    whole = not boxes
    if whole:
        h, w = img.shape[:2]
        boxes = [(0, w, h, 0)]
    boxes = sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]), reverse=True)
    return fr.face_encodings(img, boxes), whole


def _init(known):
    global _known
    _known = known


def _identify(path):
    names, rows = _known
    enc, whole = _encodings(path)
    if not enc:
        return path, "no-face", whole
    if not rows.shape[0]:
        return path, "unknown", whole
    d = np.linalg.norm(rows - enc[0], axis=1)
    best = int(np.argmin(d))
    return path, names[best] if d[best] <= TOLERANCE else "unknown", whole


def enroll(gallery_dir):
    names, rows = [], []
    for person in sorted(os.listdir(gallery_dir)):
        folder = os.path.join(gallery_dir, person)
        for f in sorted(os.listdir(folder)):
            enc, _ = _encodings(os.path.join(folder, f))
            if enc:
                names.append(person)
                rows.append(enc[0])
    return names, np.array(rows).reshape(len(rows), 128)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gallery", required=True)
    ap.add_argument("--expected")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    known = enroll(a.gallery)
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(a.procs, initializer=_init, initargs=(known,)) as pool:
        answers = pool.map(_identify, a.images, chunksize=8)
    seconds = time.perf_counter() - t0
    out = {"peer": "face_recognition 1.3.0 (dlib)", "procs": a.procs, "images": len(answers),
           "seconds": round(seconds, 3), "images_per_s": round(len(answers) / seconds, 2),
           "whole_frame": sum(w for _, _, w in answers), "enrolled": len(known[0])}
    if a.expected:
        want = {row[0]: row[1] for row in list(csv.reader(open(a.expected)))[1:]}
        stem = lambda p: os.path.splitext(os.path.basename(p))[0]  # noqa: E731
        out["correct"] = sum(want.get(stem(p)) == name for p, name, _ in answers)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
