#!/usr/bin/env python3
"""Record dlib's own descriptors for the parity chips: the independent reference for
face_recognition_dlib.onnx (not run by CI; needs the `dlib` Python module).

    python3 -m venv /tmp/dlibvenv && /tmp/dlibvenv/bin/pip install -r models/scripts/requirements-dlib.txt
    /tmp/dlibvenv/bin/python models/scripts/dlib_reference.py --dlib /path/to/face_recognition_models-0.3.0.tar.gz

runs ``dlib.face_recognition_model_v1(dat).compute_face_descriptor(chip)`` (dlib's C++ network,
CPU) on models/parity/recognition_input_{0,1,2}.png (150x150 aligned RGB chips, fed as they are)
and writes models/parity_dlib/reference.json: the dlib version, the .dat sha256, the inputs with
their sha256 and the 3x128 descriptors (dlib returns float32 values widened to double; stored with
full precision). test_convert.py compares onnxruntime on face_recognition_dlib.onnx against it.
With --check it also prints how the committed ONNX files compare, without writing anything.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import convert  # noqa: E402

INPUTS = [f"parity/recognition_input_{i}.png" for i in range(3)]
OUT = os.path.join(MODELS, "parity_dlib", "reference.json")


def dlib_descriptors(dat_bytes: bytes, chips: list[np.ndarray]) -> tuple[np.ndarray, str]:
    import dlib

    with tempfile.NamedTemporaryFile(suffix=".dat") as f:
        f.write(dat_bytes)
        f.flush()
        rec = dlib.face_recognition_model_v1(f.name)
    single = np.array([np.array(rec.compute_face_descriptor(c)) for c in chips])
    batch = np.array([np.array(d) for d in rec.compute_face_descriptor(chips)])
    assert np.array_equal(single, batch), np.abs(single - batch).max()
    return single, f"dlib {dlib.__version__} (DLIB_USE_CUDA={dlib.DLIB_USE_CUDA})"


def main(argv=None):
    from make_parity import load_rgb, sha256_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dlib", required=True, help=f"PyPI {convert.DLIB_SDIST} (or the .dat in it)")
    ap.add_argument("--check", action="store_true", help="only compare, write nothing")
    a = ap.parse_args(argv)
    chips = [load_rgb(os.path.join(MODELS, p)) for p in INPUTS]
    assert all(c.shape == (150, 150, 3) for c in chips)
    ref, version = dlib_descriptors(convert.read_dlib_dat(a.dlib), chips)
    print(version)
    if not a.check:
        os.makedirs(os.path.dirname(OUT), exist_ok=True)
        doc = {
            "about": "dlib's own compute_face_descriptor() on the parity chips (models/scripts/dlib_reference.py)",
            "dlib": version,
            "model": f"PyPI face_recognition_models==0.3.0, {convert.DLIB_DAT_MEMBER.split('/', 1)[1]}",
            "model_sha256": convert.DLIB_DAT_SHA256,
            "inputs": [{"file": p, "sha256": sha256_file(os.path.join(MODELS, p))} for p in INPUTS],
            "input_format": "150x150 RGB uint8 chips, passed to dlib unchanged",
            "descriptors": [[float(v) for v in row] for row in ref],
        }
        with open(OUT, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"wrote {OUT}")
    try:
        from make_parity import session
    except ImportError:
        return
    x = np.stack([c.transpose(2, 0, 1) for c in chips]).astype(np.float32)
    for name in ("face_recognition_dlib", "face_recognition"):
        (d,) = session(os.path.join(MODELS, f"{name}.onnx")).run(["descriptor"], {"input": x})
        print(f"{name}.onnx vs dlib: max abs {np.abs(d - ref).max():.3g}, euclidean per chip "
              + ", ".join(f"{v:.3g}" for v in np.linalg.norm(d - ref, axis=1)))


if __name__ == "__main__":
    main()
