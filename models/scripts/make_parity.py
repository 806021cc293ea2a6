#!/usr/bin/env python3
"""Write the golden parity files for the Rust tests into models/parity/.

    python3 models/scripts/make_parity.py --package /path/to/package --models models/ [--out models/parity]

Inputs are made from package/demo/sample1.jpg the way face-api's pipeline makes them (see
facepipe.py: pad to square, tfjs legacy bilinear resize, SSD detection, face crop, landmarks,
dlib alignment), rounded to uint8 and stored as lossless 8-bit RGB PNGs. The PNG pixel values
*are* the model input: input = float32(pixel), NCHW, files stacked in the listed order.
Outputs are what onnxruntime (CPU, 1 thread, sequential) gives for exactly those inputs, stored
as little-endian float32 (.f32, C order, shape in parity.json).

parity.json also carries the face-api post-processing results for these outputs (SSD NMS
indices and boxes, tiny-yolo decoded boxes, landmark padding correction) so that the Rust
decoding can be tested against the same numbers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import facepipe as fp  # noqa: E402

SAMPLE = "sample1.jpg"
N_LANDMARK = 2
N_RECOGNITION = 3
# Suggested comparison tolerance (max abs diff) for another runtime on the same inputs.
TOLERANCE = {"ssd_mobilenetv1": 1e-4, "tiny_face_detector": 1e-4, "face_landmark_68": 1e-4,
             "face_recognition": 1e-4}


def session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def sha256_file(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(np.asarray(img, np.float64) + 0.5), 0, 255).astype(np.uint8)


def save_png(path: str, img_u8: np.ndarray) -> None:
    # fixed settings, no metadata -> reproducible bytes
    Image.fromarray(img_u8, "RGB").save(path, format="PNG", optimize=False, compress_level=9)


def png_batch(paths: list[str]) -> np.ndarray:
    return fp.to_nchw(*[load_rgb(p).astype(np.float32) for p in paths])


def write_f32(path: str, arr: np.ndarray) -> None:
    np.ascontiguousarray(arr, dtype="<f4").tofile(path)


def box_json(b: fp.Box) -> list[float]:
    return [float(b.x), float(b.y), float(b.width), float(b.height)]


def build(package: str, models: str, out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    img = load_rgb(os.path.join(package, "demo", SAMPLE))
    img_h, img_w = img.shape[:2]
    sess = {n: session(os.path.join(models, f"{n}.onnx")) for n in
            ("ssd_mobilenetv1", "tiny_face_detector", "face_landmark_68", "face_recognition")}
    manifest = {
        "generator": "models/scripts/make_parity.py",
        "onnxruntime": ort.__version__,
        "source_image": f"@vladmandic/face-api@1.7.15 demo/{SAMPLE}",
        "source_image_size_wh": [img_w, img_h],
        "input_encoding": "8-bit RGB PNG; model input = float32(pixel value 0..255), NCHW, "
                          "batch = the listed files in order",
        "output_encoding": "little-endian float32, C order",
        "models": {},
    }

    def add(name, inputs, outputs, extra=None):
        entry = {
            "model": f"{name}.onnx",
            "model_sha256": sha256_file(os.path.join(models, f"{name}.onnx")),
            "tolerance_abs": TOLERANCE[name],
            "inputs": {"input": {"files": inputs, "shape": list(png_batch(
                [os.path.join(out, f) for f in inputs]).shape)}},
            "outputs": {},
        }
        for oname, (fname, arr) in outputs.items():
            write_f32(os.path.join(out, fname), arr)
            entry["outputs"][oname] = {"file": fname, "shape": list(arr.shape),
                                       "sha256": sha256_file(os.path.join(out, fname))}
        for f in inputs:
            entry["inputs"]["input"].setdefault("sha256", []).append(sha256_file(os.path.join(out, f)))
        if extra:
            entry["postprocess"] = extra
        manifest["models"][name] = entry

    # ---- SSD: sample1 padded bottom/right to square, resized to 512 --------------------------
    save_png(os.path.join(out, "ssd_input.png"), to_u8(fp.net_input(img, 512, center=False)))
    x = png_batch([os.path.join(out, "ssd_input.png")])
    boxes, scores = sess["ssd_mobilenetv1"].run(["boxes", "scores"], {"input": x})
    nms = fp.ssd_nms(boxes[0], scores[0])
    dets = fp.ssd_locate_faces(boxes[0], scores[0], img_w, img_h)
    add("ssd_mobilenetv1", ["ssd_input.png"],
        {"boxes": ("ssd_boxes.f32", boxes), "scores": ("ssd_scores.f32", scores)},
        {"nms": {"iou_threshold": fp.SSD_IOU_THRESHOLD, "max_results": fp.SSD_MAX_RESULTS,
                 "min_confidence": fp.SSD_MIN_CONFIDENCE},
         "nms_indices": nms,
         "detections_relative_to_source_image_xywh": [box_json(d.rel) for d in dets],
         "detection_scores": [float(d.score) for d in dets]})

    # ---- Tiny face detector: same padding, 416 ----------------------------------------------
    save_png(os.path.join(out, "tiny_input.png"), to_u8(fp.net_input(img, 416, center=False)))
    x = png_batch([os.path.join(out, "tiny_input.png")])
    (raw,) = sess["tiny_face_detector"].run(["raw"], {"input": x})
    tdets = fp.tiny_decode(raw[0], img_w, img_h)
    add("tiny_face_detector", ["tiny_input.png"], {"raw": ("tiny_raw.f32", raw)},
        {"anchors": fp.TINY_ANCHORS, "iou_threshold": fp.TINY_IOU_THRESHOLD,
         "score_threshold": fp.TINY_SCORE_THRESHOLD,
         "detections_relative_to_source_image_xywh": [box_json(d.rel) for d in tdets],
         "detection_scores": [float(d.score) for d in tdets]})

    # ---- Face crops from the (float, unrounded) SSD pipeline on the full-resolution image -----
    xf = fp.to_nchw(fp.net_input(img, 512, center=False))
    fb, fs = sess["ssd_mobilenetv1"].run(["boxes", "scores"], {"input": xf})
    faces = sorted(fp.ssd_locate_faces(fb[0], fs[0], img_w, img_h), key=lambda d: d.rel.x)
    if len(faces) < N_RECOGNITION:
        raise SystemExit(f"expected >= {N_RECOGNITION} faces in {SAMPLE}, got {len(faces)}")
    crops = [fp.extract_face(img, d.box) for d in faces[:N_RECOGNITION]]

    lm_files, lm_extra = [], []
    for i in range(N_LANDMARK):
        f = f"landmark_input_{i}.png"
        save_png(os.path.join(out, f), to_u8(fp.net_input(crops[i], 112, center=True)))
        lm_files.append(f)
    x = png_batch([os.path.join(out, f) for f in lm_files])
    (lms,) = sess["face_landmark_68"].run(["landmarks"], {"input": x})
    for i in range(N_LANDMARK):
        ch, cw = crops[i].shape[:2]
        rel = fp.landmarks_relative(lms[i], cw, ch)
        lm_extra.append({"crop_size_wh": [cw, ch],
                         "relative_to_crop_xy": [[float(a), float(b)] for a, b in rel]})
    add("face_landmark_68", lm_files, {"landmarks": ("landmarks.f32", lms)},
        {"padding_correction": "rel = (raw*112 - pad) / (dim*112/max(cw,ch)), pad = |w-h|/2 on the "
                               "short side (in 112-pixel units)", "faces": lm_extra})

    # ---- Recognition: dlib-aligned chips (landmarks from the float pipeline) ------------------
    rec_files = []
    for i in range(N_RECOGNITION):
        ch, cw = crops[i].shape[:2]
        (raw_lm,) = sess["face_landmark_68"].run(
            ["landmarks"], {"input": fp.to_nchw(fp.net_input(crops[i], 112, center=True))})
        pts = fp.landmarks_absolute(fp.landmarks_relative(raw_lm[0], cw, ch), cw, ch, faces[i].box)
        chip = fp.extract_face(img, fp.align_dlib(pts, cw, ch))
        f = f"recognition_input_{i}.png"
        save_png(os.path.join(out, f), to_u8(fp.net_input(chip, 150, center=True)))
        rec_files.append(f)
    x = png_batch([os.path.join(out, f) for f in rec_files])
    (desc,) = sess["face_recognition"].run(["descriptor"], {"input": x})
    dist = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    add("face_recognition", rec_files, {"descriptor": ("descriptors.f32", desc)},
        {"note": "three different people; descriptors are not unit length",
         "euclidean_distances": [[float(v) for v in row] for row in dist],
         "l2_norms": [float(v) for v in np.linalg.norm(desc, axis=1)]})

    with open(os.path.join(out, "parity.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
    return manifest


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", required=True, help="unpacked @vladmandic/face-api@1.7.15 npm package")
    ap.add_argument("--models", default=os.path.normpath(os.path.join(here, "..")),
                    help="directory with the .onnx files (default: models/)")
    ap.add_argument("--out", default=None, help="output directory (default: <models>/parity)")
    a = ap.parse_args(argv)
    out = a.out or os.path.join(a.models, "parity")
    m = build(a.package, a.models, out)
    total = 0
    for f in sorted(os.listdir(out)):
        total += os.path.getsize(os.path.join(out, f))
    print(f"wrote {out}: {len(os.listdir(out))} files, {total} bytes")
    for name, e in m["models"].items():
        print(f"  {name}: inputs {e['inputs']['input']['shape']} outputs "
              + ", ".join(f"{k}{v['shape']}" for k, v in e["outputs"].items()))
    print("  recognition distances:", np.round(np.array(
        m["models"]["face_recognition"]["postprocess"]["euclidean_distances"]), 3).tolist())


if __name__ == "__main__":
    main()
