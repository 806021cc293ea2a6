"""Calibrates the same-person threshold and the match confidence on real faces, and measures
identification and verification accuracy with them, for facerec and for the peer a user would
pick instead (ageitgey's `face_recognition`, dlib's own pipeline).

The evaluation list is `tests/data/eval/faces.csv` (`image,x,y,identity`): one row per real
face, the face being the detected box that holds the point `x,y` (source pixels), or the
image's largest face when `x,y` are empty. Identities were labelled and checked by eye:
  - named people: compared with every other face, same name = same person;
  - `?`: a person without a name, different from every named person and from the other faces
    of the same photo; never compared with `?` faces of other photos in the same folder
    (the same people may appear in several of face-api's demo photos).
The images come from registry packages (`scripts/fetch-test-data.sh eval`): dlib 19.5.0's
sdist (five Johns x 11 tight 150 px crops; a collage of four bald actors, 24 faces; nine
PASCAL VOC group photos), face_recognition 1.3.0's sdist (Obama x 3, Biden), face-api's six
demo photos and the ten distinct CSE546 crops (64 px, 8 people).

A face a system does not find counts against it: its pairs are non-matches and its
identification queries are misses.

Measured, per system, under a size-dependent rule (`--rule large,small,side`, facerec's
`auto` by default: 0.6, or 0.5 when the smaller face of a pair is under 64 px, a face's size
being the shorter side of its box in source pixels):
  - per size class (both faces at `side` px or more; the smaller under `side`), the ROC
    table (false matches on different-person pairs, missed same-person pairs), the closest
    different and farthest same pair, the equal-error rate and the operating point: the
    largest threshold with at most --far false matches (0.1% by default);
  - identification top-1: one enrolled face per person, rotated over every face of that
    person (people with one face are always enrolled, as distractors); every other named face
    is a query, right when the nearest enrolled face within the threshold is that person
    (`unknown` is a miss); `?` faces are queries that must come back `unknown`;
  - verification accuracy: the mean of the same-pair acceptance and different-pair rejection
    rates (pairs are 1:10 unbalanced; plain pair accuracy is printed too);
  - the confidence curve: a logistic fit P(same) = 1 / (1 + exp(k (d - t - d0))) on the
    distance past each pair's threshold t, class-balanced (Newton's method on the
    log-likelihood), printed as `k` and `d0` (`engine/src/threshold.rs` uses them).

usage: python3 benches/threshold.py --facerec target/release/facerec [--data DIR] [--peer]
       [--recognizer faceapi|dlib] [--rule 0.6,0.5,64] [--far 0.001]

The peer needs `dlib-bin`, `face_recognition_models` and `face_recognition --no-deps` (see
benches/peers/face_recognition.py).
"""
import argparse
import csv
import itertools
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_list(path):
    with open(path) as f:
        return [(r["image"], (int(r["x"]), int(r["y"])) if r["x"] else None, r["identity"])
                for r in csv.DictReader(f)]


def pick(faces, point):
    """The face a list row means: the box holding `point` nearest its centre, else the
    largest; None when there is none."""
    if not faces:
        return None
    if point is None:
        return max(faces, key=lambda f: f["box"][2] * f["box"][3])
    x, y = point
    inside = [f for f in faces if f["box"][0] <= x <= f["box"][0] + f["box"][2]
              and f["box"][1] <= y <= f["box"][1] + f["box"][3]]
    if not inside:
        return None
    return min(inside, key=lambda f: (f["box"][0] + f["box"][2] / 2 - x) ** 2
               + (f["box"][1] + f["box"][3] / 2 - y) ** 2)


def facerec_faces(binary, data, images, recognizer):
    out = subprocess.run([binary, "embed", "--json", "--recognizer", recognizer,
                          *[os.path.join(data, i) for i in images]],
                         check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        r = json.loads(line)
        rel = os.path.relpath(r["image"], data)
        found[rel] = [{"box": f["box"], "embedding": np.array(f["embedding"]),
                       "whole_frame": f.get("whole_frame", False)} for f in r.get("faces") or []]
    return found


def dlib_faces(data, images):
    """face_recognition with its defaults (HOG detector with one upsampling, `face_encodings`
    with the "small" 5-point landmark model, one jitter); an image where HOG finds nothing
    and that is at most 200 px is used whole, as benches/peers/face_recognition.py does."""
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "benches")]
    import face_recognition as fr
    found = {}
    for rel in images:
        img = fr.load_image_file(os.path.join(data, rel))
        h, w = img.shape[:2]
        boxes = fr.face_locations(img)
        whole = not boxes and max(w, h) <= 200
        if whole:
            boxes = [(0, w, h, 0)]
        enc = fr.face_encodings(img, boxes)
        found[rel] = [{"box": [l, t, r - l, b - t], "embedding": e, "whole_frame": whole}
                      for (t, r, b, l), e in zip(boxes, enc)]
    return found


def relation(a, b):
    """True (same person), False (different) or None (unknown) for two list rows."""
    (ia, _, na), (ib, _, nb) = a, b
    if na != "?" and nb != "?":
        return na == nb
    if na == "?" and nb == "?":
        if ia == ib:
            return False
        return None if os.path.dirname(ia) == os.path.dirname(ib) else False
    return False


def fit_logistic(d, y):
    """k, d0 of P(same) = 1 / (1 + exp(k (d - d0))), class-balanced."""
    w = np.where(y == 1, 0.5 / max(1, y.sum()), 0.5 / max(1, (1 - y).sum()))
    X = np.stack([np.ones_like(d), d], axis=1)
    beta = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ beta)))
        g = X.T @ (w * (y - p))
        H = -(X.T * (w * p * (1 - p))) @ X
        beta -= np.linalg.solve(H, g)
    a, b = beta  # P = sigmoid(a + b d) = 1 / (1 + exp(-b (d + a / b)))
    return -b, -a / b


def side(face):
    """A face's size for the same-person rule: the shorter side of its box (source px)."""
    return min(face["box"][2], face["box"][3])


def roc(name, same, diff, far):
    """Prints the ROC table, the equal-error rate and the operating point; returns it."""
    print(f"\n### {name}: {len(same)} same-person pairs, {len(diff)} different-person pairs\n")
    print("| threshold | false matches | false-match rate | missed same-person | false-non-match rate |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for t in np.round(np.arange(0.40, 0.701, 0.025), 3):
        fm, mm = int((diff <= t).sum()), int((same > t).sum())
        fnm = f"{mm / len(same):.4f}" if len(same) else "-"
        print(f"| {t:.3f} | {fm}/{len(diff)} | {fm / len(diff):.4f} | {mm}/{len(same)} | {fnm} |")
    fine = np.round(np.arange(0.30, 0.90, 0.001), 3)
    fmr = np.array([(diff <= t).mean() for t in fine])
    ok = fine[fmr <= far]
    op = float(ok.max()) if len(ok) else float("nan")
    fs = same[np.isfinite(same)]
    print(f"\nclosest different-person pair {diff.min():.3f}"
          + (f", farthest same-person pair {fs.max():.3f}" if len(fs) else ""))
    if len(same):
        fnmr = np.array([(same > t).mean() for t in fine])
        k = int(np.argmin(np.abs(fmr - fnmr)))
        print(f"equal-error rate {max(fmr[k], fnmr[k]):.4f} at {fine[k]:.3f}; operating point "
              f"(false-match rate <= {far:g}): {op:.3f}, false-non-match rate {(same > op).mean():.4f}")
    else:
        print(f"operating point (false-match rate <= {far:g}): {op:.3f}")
    return op


def evaluate(name, rows, found, rule, far):
    """`rule` = (large, small, small_side): the pair's threshold is `small` when its smaller
    face is under `small_side` px, else `large`."""
    large, small, small_side = rule

    def threshold(a, b):
        return small if min(side(a), side(b)) < small_side else large

    faces = [pick(found.get(img, []), pt) for img, pt, _ in rows]
    missed = sum(f is None for f in faces)
    whole = sum(1 for f in faces if f is not None and f["whole_frame"])
    pairs = []  # (same?, distance, threshold, smaller side)
    for (i, a), (j, b) in itertools.combinations(enumerate(rows), 2):
        rel = relation(a, b)
        if rel is None:
            continue
        fa, fb = faces[i], faces[j]
        if fa is None or fb is None:
            pairs.append((rel, np.inf, large, 0.0))
        else:
            pairs.append((rel, float(np.linalg.norm(fa["embedding"] - fb["embedding"])),
                          threshold(fa, fb), min(side(fa), side(fb))))
    rel = np.array([p[0] for p in pairs])
    dist = np.array([p[1] for p in pairs])
    tpair = np.array([p[2] for p in pairs])
    sides = np.array([p[3] for p in pairs])
    print(f"\n## {name}\n")
    print(f"{len(rows)} faces, {missed} not found, {whole} used whole-frame; "
          f"{rel.sum()} same-person pairs, {(~rel).sum()} different-person pairs "
          f"(a face not found makes its pairs non-matches)")
    big = sides >= small_side if small_side else np.ones_like(rel)
    roc(f"both faces {small_side:g} px or more" if small_side else "all pairs",
        dist[rel & big], dist[~rel & big], far)
    if small_side:
        roc(f"the smaller face under {small_side:g} px", dist[rel & ~big], dist[~rel & ~big], far)
    finite = np.isfinite(dist)
    k, d0 = fit_logistic(dist[finite] - tpair[finite], rel[finite].astype(float))
    print(f"\nconfidence fit (every pair found, distance from its threshold t): "
          f"P(same) = 1 / (1 + exp({k:.2f} (d - t - {d0:.4f})))")
    accept = dist <= tpair
    fm, fnm = (accept & ~rel).sum(), (~accept & rel).sum()
    verification = ((accept & rel).sum() / rel.sum() + (~accept & ~rel).sum() / (~rel).sum()) / 2
    ident, reject = identification(rows, faces, threshold)
    label = f"rule {large} / {small} under {small_side:g} px" if small_side else f"threshold {large}"
    print(f"\n**{label}**: false matches {fm}/{(~rel).sum()} "
          f"({fm / (~rel).sum():.4%}), missed same-person {fnm}/{rel.sum()}; identification top-1 "
          f"{ident:.4f} (unnamed faces answered unknown {reject:.4f}); verification accuracy "
          f"{verification:.4f} (pair accuracy {(accept == rel).mean():.4f})")
    return {"identification": ident, "verification": verification, "reject": reject}


def identification(rows, faces, threshold):
    people = {}
    for i, (_, _, n) in enumerate(rows):
        if n != "?":
            people.setdefault(n, []).append(i)
    rounds = max(len(v) for v in people.values())
    right = total = rej = rej_total = 0
    for r in range(rounds):
        enrolled = {ix[r % len(ix)] for ix in people.values()}
        gallery = [(rows[i][2], faces[i]) for i in enrolled if faces[i] is not None]
        mat = np.stack([f["embedding"] for _, f in gallery])
        for i, (_, _, n) in enumerate(rows):
            if i in enrolled or (n != "?" and len(people[n]) < 2):
                continue
            f = faces[i]
            answer = None
            if f is not None:
                d = np.linalg.norm(mat - f["embedding"], axis=1)
                j = int(np.argmin(d))
                answer = gallery[j][0] if d[j] <= threshold(f, gallery[j][1]) else "unknown"
            if n == "?":
                rej_total += 1
                rej += answer in ("unknown", None)
            else:
                total += 1
                right += answer == n
    return right / total, rej / rej_total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--facerec", required=True)
    ap.add_argument("--data", help="the evaluation tree (default: scripts/fetch-test-data.sh eval)")
    ap.add_argument("--list", default=os.path.join(ROOT, "tests/data/eval/faces.csv"))
    ap.add_argument("--recognizer", action="append", help="faceapi, dlib (default: both)")
    ap.add_argument("--rule", default="0.6,0.5,64",
                    help="large,small,side: the same-person threshold, and the one for pairs whose "
                         "smaller face is under `side` px (facerec's default `auto`)")
    ap.add_argument("--far", type=float, default=0.001)
    ap.add_argument("--peer", action="store_true", help="also dlib's face_recognition at its 0.6")
    a = ap.parse_args()
    data = a.data or subprocess.run([os.path.join(ROOT, "scripts/fetch-test-data.sh"), "eval"],
                                    check=True, capture_output=True, text=True).stdout.strip()
    rows = load_list(a.list)
    images = sorted({r[0] for r in rows})
    for rec in a.recognizer or ["faceapi", "dlib"]:
        evaluate(f"facerec, recognizer {rec}", rows, facerec_faces(a.facerec, data, images, rec),
                 tuple(float(v) for v in a.rule.split(",")), a.far)
    if a.peer:
        found = dlib_faces(data, images)
        evaluate("face_recognition 1.3.0 (dlib), its tolerance 0.6", rows, found, (0.6, 0.6, 0), a.far)
        evaluate("face_recognition 1.3.0 (dlib), with facerec's rule", rows, found,
                 tuple(float(v) for v in a.rule.split(",")), a.far)


if __name__ == "__main__":
    main()
