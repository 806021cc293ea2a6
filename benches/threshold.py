"""Validates the same-person threshold on the real pairs available offline.

Runs `facerec embed --json` (the product itself) on
  - the six face-api demo photos: people in one photo are certainly different people
    (31 different-person pairs; across photos identities may repeat, so those are unused);
  - the ten distinct CSE546 crops (64x64, LFW-like): 2 same-person pairs (Emily, Gerry)
    and 43 different-person pairs, labels from the data set's CSV;
  - each demo face against itself in a mirrored, half-size and JPEG-q60 copy of its photo
    (same-person pairs under capture changes, easier than real pairs).
and prints false-match / false-non-match counts per threshold as a markdown table.

usage: python3 benches/threshold.py --facerec target/release/facerec --faceapi DIR --cse546 DIR
"""
import argparse
import csv
import io
import itertools
import json
import os
import subprocess
import tempfile

import numpy as np
from PIL import Image


def embed(facerec, paths):
    out = subprocess.run([facerec, "embed", "--json", *paths],
                         check=False, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--facerec", required=True)
    ap.add_argument("--faceapi", required=True, help="unpacked @vladmandic/face-api package")
    ap.add_argument("--cse546", required=True, help="tests/data/cse546 (the CSE546 workload)")
    a = ap.parse_args()
    same, diff = [], []
    tmp = tempfile.mkdtemp()
    demo = [os.path.join(a.faceapi, "demo", f"sample{i}.jpg") for i in range(1, 7)]
    variants = []
    for p in demo:
        img = Image.open(p).convert("RGB")
        stem = os.path.splitext(os.path.basename(p))[0]
        for label, v in [("mirror", img.transpose(Image.FLIP_LEFT_RIGHT)),
                         ("half", img.resize((img.width // 2, img.height // 2), Image.BILINEAR)),
                         ("q60", img)]:
            path = os.path.join(tmp, f"{stem}-{label}.jpg")
            v.save(path, quality=60 if label == "q60" else 95)
            variants.append((p, label, path))
    results = {r["image"]: r for r in embed(a.facerec, demo + [v[2] for v in variants])}
    for p in demo:
        faces = results[p]["faces"]
        for f, g in itertools.combinations(faces, 2):
            diff.append(("demo-same-photo", np.linalg.norm(np.array(f["embedding"]) - np.array(g["embedding"]))))
    for p, label, path in variants:
        base = results[p]["faces"]
        img_w = Image.open(p).width
        scale = 2.0 if label == "half" else 1.0
        for f in results[path]["faces"]:
            x, y, w, h = [v * scale for v in f["box"]]
            cx = x + w / 2
            if label == "mirror":
                cx = img_w - cx
            orig = min(base, key=lambda b: abs(b["box"][0] + b["box"][2] / 2 - cx))
            same.append((f"demo-{label}", np.linalg.norm(np.array(f["embedding"]) - np.array(orig["embedding"]))))
    # CSE546 distinct crops
    import zipfile
    with zipfile.ZipFile(os.path.join(a.cse546, "face_images_1000.zip")) as z:
        z.extractall(tmp)
    labels = {r["Image"]: r["Results"] for r in csv.DictReader(open(os.path.join(a.cse546, "expected.csv")))}
    stems = [f"test_{i:03d}" for i in range(10)]
    cse = embed(a.facerec, [os.path.join(tmp, "face_images_1000", s + ".jpg") for s in stems])
    for (s1, r1), (s2, r2) in itertools.combinations(zip(stems, cse), 2):
        d = np.linalg.norm(np.array(r1["faces"][0]["embedding"]) - np.array(r2["faces"][0]["embedding"]))
        (same if labels[s1] == labels[s2] else diff).append(("cse546", d))
    print(f"same-person pairs: {len(same)}, different-person pairs: {len(diff)}")
    for kind in sorted({k for k, _ in same + diff}):
        ds = [d for k, d in same + diff if k == kind]
        print(f"- {kind}: {len(ds)} pairs, distance min {min(ds):.3f} median {np.median(ds):.3f} max {max(ds):.3f}")
    print()
    print("| threshold | false matches (different people <= t) | missed matches (same person > t) |")
    print("| ---: | ---: | ---: |")
    for t in (0.4, 0.45, 0.5, 0.55, 0.6, 0.65):
        fm = sum(d <= t for _, d in diff)
        mm = sum(d > t for _, d in same)
        print(f"| {t:.2f} | {fm}/{len(diff)} | {mm}/{len(same)} |")


if __name__ == "__main__":
    main()
