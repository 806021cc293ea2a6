"""Tests of the PyTorch peer (benches/torch/peer.py), on the CPU. Exits 1 on a failure.

Not run by .ci/run: CI has no GPU and PyPI's torch wheel brings >3 GB of CUDA libraries.
Runs where torch + onnxruntime + onnx are installed: on a GPU host (`bash
benches/gpu/run.sh` runs it as one of its steps) or locally in a virtualenv:

  python3 -m venv ~/.cache/facerec-torch-venv
  ~/.cache/facerec-torch-venv/bin/pip install torch onnx onnxruntime numpy pillow
  ~/.cache/facerec-torch-venv/bin/python benches/torch/test_peer.py

Expected values come from onnxruntime (live, and the committed models/parity/*.f32 that
make_parity.py wrote with onnxruntime), never from the modules under test.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer  # noqa: E402

CPU = torch.device("cpu")
# parity.json's model key of each net
PARITY_KEY = {"recognition": "face_recognition", "ssd": "ssd_mobilenetv1",
              "tiny": "tiny_face_detector", "landmarks": "face_landmark_68"}


def test_matches_onnxruntime():
    """Every net (and the dlib-weights recognition file) within tolerance of onnxruntime."""
    worst = peer.check(list(peer.NETS) + (["recognition_dlib"] if peer.has_dlib() else []), CPU)
    assert worst <= 1.0, f"worst difference {worst:.2f}x the tolerance"


def test_matches_golden_files():
    """The committed onnxruntime outputs in models/parity, on the committed parity inputs."""
    with open(os.path.join(peer.PARITY, "parity.json")) as f:
        models = json.load(f)["models"]
    for net, key in PARITY_KEY.items():
        spec = models[key]
        x = peer.inputs(net)
        got = peer.run_torch(peer.build(net), x, CPU)
        for g, (name, out) in zip(got, spec["outputs"].items()):
            ref = np.fromfile(os.path.join(peer.PARITY, out["file"]), "<f4").reshape(out["shape"])
            diff = float(np.abs(g - ref).max())
            tol = peer.RTOL_F32 * float(np.abs(ref).max())
            print(f"golden {net:<12} {name:<10} max abs diff {diff:.3e} (tolerance {tol:.1e})")
            assert diff <= tol, f"{net}/{name}: {diff} > {tol}"


def test_every_weight_used():
    """Each module takes every weight tensor of its ONNX file (peer.build raises otherwise)."""
    for net in list(peer.NETS) + (["recognition_dlib"] if peer.has_dlib() else []):
        module = peer.build(net)
        assert sum(p.numel() for p in module.parameters()) > 0, net


def test_check_detects_a_wrong_padding():
    """The comparison is sensitive: symmetric padding on the landmark net's first stride-2 conv
    (the graph pads only at the bottom/right) must fail the tolerance."""
    x = peer.inputs("landmarks")
    ref = peer.run_ort("landmarks", x)[0]
    module = peer.build("landmarks")
    conv = module.blocks[0].conv0
    conv.same, conv.padding = False, (1, 1)
    got = peer.run_torch(module, x, CPU)[0]
    assert got.shape == ref.shape
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    print(f"wrong padding: relative difference {rel:.2e} (must exceed {peer.RTOL_F32:g})")
    assert rel > peer.RTOL_F32


def test_search_finds_the_nearest_row():
    """Search's index and distance equal a float64 numpy scan of the same gallery."""
    g = peer.gallery(5000, CPU)
    q = torch.from_numpy(peer.descriptors()[[0, 1, 2, 0]]) + 0.01
    idx, dist = peer.run_torch(peer.Search(g), q.numpy(), CPU)
    d = np.sqrt(((q.double().numpy()[:, None, :] - g.double().numpy()[None]) ** 2).sum(-1))
    assert (idx == d.argmin(1)).all(), (idx, d.argmin(1))
    assert np.abs(dist - d.min(1)).max() < 1e-5


def test_bench_json_shape():
    """--bench writes the JSON report.py reads: net names, dtype, batch, items/s."""
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"peer-test-{os.getpid()}.json")
    try:
        status = peer.main(["--bench", "--device", "cpu", "--nets", "landmarks,search", "--batches", "1,2",
                            "--seconds", "0", "--warmup", "1", "--gallery-faces", "1000", "--json", path])
        assert status == 0
        with open(path) as f:
            doc = json.load(f)
    finally:
        if os.path.exists(path):
            os.remove(path)
    assert doc["tool"] == "pytorch-eager" and doc["torch"] == torch.__version__
    rows = doc["results"]
    assert [(r["net"], r["dtype"], r["batch"]) for r in rows] == [
        ("landmarks", "f32", 1), ("landmarks", "f32", 2), ("search", "f32", 1), ("search", "f32", 2)]
    for r in rows:
        assert r["items_per_s"] > 0 and r["median_ms"] > 0 and r["iters"] >= 3
        assert abs(r["items_per_s"] - r["batch"] / (r["median_ms"] / 1e3)) < 1e-6 * r["items_per_s"]


def main():
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    failed = 0
    for test in tests:
        try:
            test()
            print(f"ok   {test.__name__}", flush=True)
        except Exception as e:  # report every test, then fail
            failed += 1
            print(f"FAIL {test.__name__}: {type(e).__name__}: {e}", flush=True)
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
