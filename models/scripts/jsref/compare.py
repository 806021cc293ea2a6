#!/usr/bin/env python3
"""Compare the ONNX models (onnxruntime) with face-api itself (tfjs, via ref.js). Not run by CI.

    python3 models/scripts/jsref/compare.py --jsref /tmp/jsref --package /path/to/package

--jsref: scratch dir whose node_modules hold @tensorflow/tfjs@4.22.0, @tensorflow/tfjs-backend-wasm
@4.22.0 and @vladmandic/face-api@1.7.15 (see ref.js for the npm commands).

Checks, with max abs differences printed:
 1. each network on the committed parity inputs (models/parity/*.png) and on seeded random
    0..255 noise batches: ONNX output vs face-api's network output;
 2. the pre-processing of facepipe.py (pad to square + tfjs bilinear resize, face crops,
    dlib-aligned chips) vs face-api's toBatchTensor / extractFaceTensors on sample1.jpg;
 3. the whole pipeline (SSD + NMS + landmarks + alignment + descriptors, tiny detector + NMS)
    run with facepipe.py + onnxruntime vs face-api's detectAllFaces(...).withFaceLandmarks()
    .withFaceDescriptors() on sample1.jpg.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import facepipe as fp  # noqa: E402
from make_parity import load_rgb, session  # noqa: E402

OUTPUTS = {"ssd_mobilenetv1": ["boxes", "scores"], "tiny_face_detector": ["raw"],
           "face_landmark_68": ["landmarks"], "face_recognition": ["descriptor"]}
SIZES = {"ssd_mobilenetv1": 512, "tiny_face_detector": 416, "face_landmark_68": 112, "face_recognition": 150}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsref", required=True, help="dir with node_modules (tfjs 4.22 + face-api 1.7.15)")
    ap.add_argument("--package", required=True, help="unpacked @vladmandic/face-api@1.7.15 package")
    ap.add_argument("--models", default=os.path.normpath(os.path.join(HERE, "..", "..")))
    ap.add_argument("--work", default=None, help="scratch dir (default: <jsref>/work)")
    ap.add_argument("--noise-batch", type=int, default=2)
    a = ap.parse_args(argv)
    work = a.work or os.path.join(a.jsref, "work")
    os.makedirs(work, exist_ok=True)
    parity = os.path.join(a.models, "parity")
    with open(os.path.join(parity, "parity.json"), encoding="utf-8") as f:
        pj = json.load(f)

    # ---- job: network inputs (NHWC f32) ---------------------------------------------------------
    rng = np.random.default_rng(20240501)
    job = {"nets": []}
    inputs = {}
    for model, size in SIZES.items():
        files = pj["models"][model]["inputs"]["input"]["files"]
        x_parity = np.stack([load_rgb(os.path.join(parity, f)).astype(np.float32) for f in files])
        x_noise = rng.integers(0, 256, size=(a.noise_batch, size, size, 3)).astype(np.float32)
        for tag, x in (("parity", x_parity), ("noise", x_noise)):
            name = f"{model}_{tag}"
            x.astype("<f4").tofile(os.path.join(work, f"in_{name}.f32"))
            job["nets"].append({"name": name, "model": model, "file": f"in_{name}.f32", "shape": list(x.shape)})
            inputs[name] = (model, x)
    img = load_rgb(os.path.join(a.package, "demo", "sample1.jpg"))
    img.tofile(os.path.join(work, "sample1.u8"))
    job["pipeline"] = {"file": "sample1.u8", "height": img.shape[0], "width": img.shape[1]}
    job["pad_cases"] = []
    pad_imgs = []
    for k, (ph, pw, size, center) in enumerate([(50, 37, 112, True), (37, 50, 150, True), (61, 40, 150, True),
                                                (40, 61, 416, False), (300, 199, 512, False), (112, 112, 112, True)]):
        im = rng.integers(0, 256, size=(ph, pw, 3)).astype(np.uint8)
        im.tofile(os.path.join(work, f"pad_{k}.u8"))
        job["pad_cases"].append({"file": f"pad_{k}.u8", "height": ph, "width": pw, "size": size, "center": center})
        pad_imgs.append(im)
    with open(os.path.join(work, "job.json"), "w", encoding="utf-8") as f:
        json.dump(job, f)

    # ---- run face-api -----------------------------------------------------------------------------
    env = dict(os.environ, NODE_PATH=os.path.join(a.jsref, "node_modules"))
    subprocess.run(["node", os.path.join(HERE, "ref.js"), work, os.path.join(a.package, "model")],
                   check=True, env=env)
    with open(os.path.join(work, "js_result.json"), encoding="utf-8") as f:
        js = json.load(f)
    print(f"reference: face-api {js['faceapi']}, tfjs {js['tfjs']} backend {js['backend']}")

    def js_arr(fname, shape):
        return np.fromfile(os.path.join(work, fname), "<f4").reshape(shape)

    sess = {m: session(os.path.join(a.models, f"{m}.onnx")) for m in OUTPUTS}
    worst = {}
    print("\n1. networks, ONNX (onnxruntime) vs face-api (tfjs cpu): max abs diff")
    for name, (model, x) in inputs.items():
        outs = sess[model].run(OUTPUTS[model], {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
        parts = []
        for oname, o in zip(OUTPUTS[model], outs):
            j = js_arr(f"js_{name}_{oname}.f32", js["outputs"][name][oname])
            assert j.shape == o.shape, (name, oname, j.shape, o.shape)
            d = float(np.abs(o - j).max())
            worst[model] = max(worst.get(model, 0.0), d)
            parts.append(f"{oname}{list(o.shape)} {d:.2e} (|ref| max {np.abs(j).max():.3g})")
        print(f"   {name:32s} " + "; ".join(parts))
    print("   worst per model: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))

    # ---- pre-processing ---------------------------------------------------------------------------
    p = js["pipeline"]
    print("\n2. pre-processing, facepipe.py vs face-api toBatchTensor/extractFaceTensors: max abs diff")
    for c, im, shape in zip(job["pad_cases"], pad_imgs, js["pad_cases"]):
        mine = fp.net_input(im, c["size"], c["center"])
        ref = js_arr(f"js_{c['file']}.f32", shape)[0]
        print(f"   {c['width']}x{c['height']} -> {c['size']} center={c['center']!s:5}: {np.abs(mine - ref).max():.2e}")
    for key, size in (("ssd_input", 512), ("tiny_input", 416)):
        mine = fp.net_input(img, size, center=False)
        ref = js_arr(f"js_pipe_{key}.f32", p[key])[0]
        print(f"   {key:12s} {size}x{size} (pad bottom/right + bilinear): {np.abs(mine - ref).max():.2e}")

    # ---- pipeline ---------------------------------------------------------------------------------
    h, w = img.shape[:2]
    xb, xs = sess["ssd_mobilenetv1"].run(["boxes", "scores"], {"input": fp.to_nchw(fp.net_input(img, 512, False))})
    dets = fp.ssd_locate_faces(xb[0], xs[0], w, h)
    js_faces = p["faces"]
    assert len(dets) == len(js_faces), (len(dets), len(js_faces))
    d_crop = d_chip = d_box = d_score = d_lm = d_desc = d_align = 0.0
    for i, (d, jf) in enumerate(zip(dets, js_faces)):
        b = d.box
        d_box = max(d_box, float(np.abs(np.array([b.x, b.y, b.width, b.height]) - np.array(jf["box"])).max()))
        d_score = max(d_score, abs(d.score - jf["score"]))
        crop = fp.extract_face(img, d.box)
        crop_in = fp.net_input(crop, 112, center=True)
        d_crop = max(d_crop, float(np.abs(crop_in - js_arr(f"js_pipe_crop_{i}.f32", jf["crop_input"])[0]).max()))
        (raw,) = sess["face_landmark_68"].run(["landmarks"], {"input": fp.to_nchw(crop_in)})
        ch, cw = crop.shape[:2]
        pts = fp.landmarks_absolute(fp.landmarks_relative(raw[0], cw, ch), cw, ch, d.box)
        d_lm = max(d_lm, float(np.abs(pts - np.array(jf["landmarks"])).max()))
        al = fp.align_dlib(pts, cw, ch)
        d_align = max(d_align, float(np.abs(np.array([al.x, al.y, al.width, al.height]) - np.array(jf["aligned"])).max()))
        chip_in = fp.net_input(fp.extract_face(img, al), 150, center=True)
        d_chip = max(d_chip, float(np.abs(chip_in - js_arr(f"js_pipe_chip_{i}.f32", jf["chip_input"])[0]).max()))
        (desc,) = sess["face_recognition"].run(["descriptor"], {"input": fp.to_nchw(chip_in)})
        d_desc = max(d_desc, float(np.abs(desc[0] - np.array(jf["descriptor"])).max()))
    print(f"   face crop 112 (centred pad + bilinear): {d_crop:.2e}; aligned chip 150: {d_chip:.2e}")
    print(f"\n3. pipeline on sample1.jpg ({w}x{h}), facepipe.py + ONNX vs face-api, max abs diff:")
    print(f"   SSD: {len(dets)} faces (face-api {len(js_faces)}); box px {d_box:.2e}; score {d_score:.2e}")
    print(f"   landmarks px {d_lm:.2e}; dlib aligned rect px {d_align:.2e}; descriptors {d_desc:.2e}")
    (raw,) = sess["tiny_face_detector"].run(["raw"], {"input": fp.to_nchw(fp.net_input(img, 416, False))})
    tdets = fp.tiny_decode(raw[0], w, h)
    jt = p["tiny"]
    assert len(tdets) == len(jt), (len(tdets), len(jt))
    tb = max(float(np.abs(np.array([d.box.x, d.box.y, d.box.width, d.box.height]) - np.array(t["box"])).max())
             for d, t in zip(tdets, jt))
    ts = max(abs(d.score - t["score"]) for d, t in zip(tdets, jt))
    print(f"   tiny: {len(tdets)} faces (face-api {len(jt)}); box px {tb:.2e}; score {ts:.2e}")


if __name__ == "__main__":
    main()
