"""Tests of benches/gpu/report.py on small hand-made JSON files. Exits 1 on a failure.

The fixtures show the input format only: their numbers are made up, not measurements.
usage: python3 benches/gpu/test_report.py
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

FACEREC = {"tool": "facerec", "backend": "wgpu", "adapter": "Example GPU (Vulkan)", "results": [
    {"net": "recognition", "dtype": "f32", "batch": 1, "items_per_s": 50.0, "median_ms": 20.0, "iters": 10},
    {"net": "recognition", "dtype": "f32", "batch": 64, "items_per_s": 3000.0, "median_ms": 21.3, "iters": 10},
    {"net": "ssd", "dtype": "f32", "batch": 64, "items_per_s": 400.0, "median_ms": 160.0, "iters": 5},
    {"net": "pipeline", "dtype": "f32", "batch": 16, "items_per_s": 120.0, "median_ms": 133.3, "iters": 5},
    {"net": "search_gpu", "dtype": "f32", "batch": 64, "items_per_s": 6400.0, "median_ms": 10.0, "iters": 50},
    {"net": "search_cpu", "dtype": "f32", "batch": 64, "items_per_s": 64.0, "median_ms": 1000.0, "iters": 3},
]}
TORCH_F32 = {"tool": "pytorch-eager", "torch": "2.11.0", "device": "Example GPU",
             "settings": {"tf32": False, "cudnn_benchmark": True, "timed": "forward + outputs to host"},
             "results": [
                 {"net": "recognition", "dtype": "f32", "batch": 1, "items_per_s": 100.0, "median_ms": 10.0, "iters": 50},
                 {"net": "recognition", "dtype": "f32", "batch": 64, "items_per_s": 2000.0, "median_ms": 32.0, "iters": 30},
                 {"net": "ssd", "dtype": "f32", "batch": 64, "items_per_s": 800.0, "median_ms": 80.0, "iters": 12},
                 {"net": "search", "dtype": "f32", "batch": 64, "items_per_s": 3200.0, "median_ms": 20.0, "iters": 50},
             ]}
TORCH_F16 = {"tool": "pytorch-eager", "torch": "2.11.0", "device": "Example GPU",
             "fp16_vs_fp32_rel_diff": {"recognition": 0.0012, "ssd": 0.0009},
             "results": [{"net": "recognition", "dtype": "f16", "batch": 64, "items_per_s": 5000.0,
                          "median_ms": 12.8, "iters": 40}]}
TORCH_F32_UPLOAD = {"tool": "pytorch-eager", "torch": "2.11.0", "device": "Example GPU",
                    "settings": {"input_upload": True}, "results": [
                        {"net": "recognition", "dtype": "f32", "batch": 64, "items_per_s": 1500.0,
                         "median_ms": 42.7, "iters": 20}]}
ENV = {"gpu": "Example GPU", "driver": "1.2.3", "date": "2026-01-01T00:00:00+00:00", "revision": "abc1234"}


def write(folder, files):
    for name, doc in files.items():
        with open(os.path.join(folder, name), "w") as f:
            json.dump(doc, f)


def rows(text):
    """{(net, batch): [cells after batch]} of the table in `text`."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) > 2 and cells[1].isdigit():
            out[(cells[0], int(cells[1]))] = cells[2:]
    return out


def test_full_run():
    with tempfile.TemporaryDirectory() as d:
        write(d, {"facerec-wgpu.json": FACEREC, "torch-fp32.json": TORCH_F32,
                  "torch-fp16.json": TORCH_F16, "env.json": ENV})
        text = report.report(d)
    print(text)
    r = rows(text)
    assert r[("recognition", 1)][:3] == ["50.0", "100", "0.50x"], r[("recognition", 1)]
    assert r[("recognition", 64)] == ["3,000", "2,000", "1.50x", "5,000"], r[("recognition", 64)]
    assert r[("ssd", 64)][:3] == ["400", "800", "0.50x"]
    assert r[("pipeline", 16)][:3] == ["120", "—", "—"]  # no PyTorch pipeline peer
    assert r[("search_gpu", 64)][:3] == ["6,400", "3,200", "2.00x"]  # vs the peer's `search`
    assert r[("search_cpu", 64)][:3] == ["64.0", "—", "—"]
    order = [k for k in r]
    assert order == [("recognition", 1), ("recognition", 64), ("ssd", 64), ("pipeline", 16),
                     ("search_gpu", 64), ("search_cpu", 64)], order
    assert "GPU: Example GPU, driver 1.2.3" in text and "facerec @ abc1234" in text
    assert "TF32 off, cudnn.benchmark on" in text
    assert "Goal (facerec >= PyTorch eager f32 at batch >= 64): met for 2 of 3 net/batch pairs; behind: ssd@64 0.50x." in text
    assert "recognition 1.2e-03, ssd 9.0e-04" in text
    assert "Missing from this run: torch-fp32-upload.json." in text


def test_upload_columns():
    with tempfile.TemporaryDirectory() as d:
        write(d, {"facerec-wgpu.json": FACEREC, "torch-fp32.json": TORCH_F32,
                  "torch-fp32-upload.json": TORCH_F32_UPLOAD})
        text = report.report(d)
    assert "PyTorch f32 incl. input upload (items/s)" in text
    assert rows(text)[("recognition", 64)] == ["3,000", "2,000", "1.50x", "1,500", "2.00x"]
    assert rows(text)[("ssd", 64)][3:] == ["—", "—"]
    assert "Goal (facerec >= PyTorch eager f32 incl. upload at batch >= 64): met for 1 of 1" in text


def test_host_prep_pipeline_rows_join_the_table():
    host = {"tool": "facerec", "backend": "wgpu", "adapter": "Example GPU (Vulkan)", "results": [
        {"net": "pipeline_host_prep", "dtype": "f32", "batch": 16, "items_per_s": 90.0,
         "median_ms": 177.8, "iters": 5}]}
    with tempfile.TemporaryDirectory() as d:
        write(d, {"facerec-wgpu.json": FACEREC, "facerec-wgpu-host-prep.json": host})
        text = report.report(d)
    r = rows(text)
    assert r[("pipeline_host_prep", 16)][:3] == ["90.0", "—", "—"], r
    order = [k for k in r]
    assert order.index(("pipeline_host_prep", 16)) == order.index(("pipeline", 16)) + 1, order
    assert "facerec-wgpu-host-prep.json" not in text  # optional: never listed as missing


def test_missing_files():
    with tempfile.TemporaryDirectory() as d:
        write(d, {"torch-fp32.json": TORCH_F32})
        text = report.report(d)
    assert "Missing from this run: facerec-wgpu.json, torch-fp32-upload.json, torch-fp16.json." in text
    assert rows(text)[("recognition", 64)] == ["—", "2,000", "—"]
    assert "not measured" in text


def main():
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    failed = 0
    for test in tests:
        try:
            test()
            print(f"ok   {test.__name__}")
        except Exception as e:  # report every test, then fail
            failed += 1
            print(f"FAIL {test.__name__}: {type(e).__name__}: {e}")
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
