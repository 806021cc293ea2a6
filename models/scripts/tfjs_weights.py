"""Read a TensorFlow.js weights manifest (``<name>-weights_manifest.json`` + ``.bin`` shards).

Mirrors ``tf.io.decodeWeights`` of @tensorflow/tfjs-core 4.x (``io_utils.js``):

* every entry is read by its *own* dtype, one after the other, from the concatenated shards of
  its group (face-api's recognition model mixes uint8-quantized and plain float32 tensors);
* quantized ``uint8`` / ``uint16`` entries: ``value = q * scale + min``, computed in double
  precision and stored as float32 (exactly what ``Float32Array[i] = v * scale + min`` does);
  int32 entries are rounded (``Math.round``); ``float16`` entries are widened to float32;
* unquantized ``float32`` / ``int32`` entries are raw little-endian values.

All float tensors come back as C-contiguous float32 numpy arrays with the manifest's shape
(TF layout, e.g. conv filters ``[kh, kw, in, out]``, depthwise filters ``[kh, kw, in, mult]``).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

_QUANT_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "float16": np.dtype("<f2")}
_PLAIN_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("u1")}


def _js_round(x: np.ndarray) -> np.ndarray:
    """JavaScript Math.round: halves round towards +infinity."""
    return np.floor(x + 0.5)


def decode_group(buf: bytes, specs: list[dict]) -> dict[str, np.ndarray]:
    """Decode the weight specs of one manifest group from its concatenated shard bytes."""
    out: dict[str, np.ndarray] = {}
    off = 0
    for spec in specs:
        name, dtype, shape = spec["name"], spec["dtype"], list(spec["shape"])
        n = math.prod(shape)
        q = spec.get("quantization")
        if q is not None:
            qdt = _QUANT_DTYPES[q["dtype"]]
            raw = np.frombuffer(buf, dtype=qdt, count=n, offset=off)
            off += n * qdt.itemsize
            if q["dtype"] == "float16":
                if dtype != "float32":
                    raise ValueError(f"{name}: float16 quantization needs float32 dtype")
                val = raw.astype(np.float32)
            else:
                deq = raw.astype(np.float64) * float(q["scale"]) + float(q["min"])
                if dtype == "float32":
                    val = deq.astype(np.float32)
                elif dtype == "int32":
                    val = _js_round(deq).astype(np.int32)
                else:
                    raise ValueError(f"{name}: unsupported dtype {dtype} with quantization")
        else:
            if dtype not in _PLAIN_DTYPES:
                raise ValueError(f"{name}: unsupported dtype {dtype}")
            dt = _PLAIN_DTYPES[dtype]
            val = np.frombuffer(buf, dtype=dt, count=n, offset=off).copy()
            off += n * dt.itemsize
            if dtype == "float32":
                val = val.astype(np.float32)
        if name in out:
            raise ValueError(f"duplicate weight name {name}")
        out[name] = np.ascontiguousarray(val.reshape(shape))
    if off != len(buf):
        raise ValueError(f"manifest consumed {off} bytes but shards hold {len(buf)}")
    return out


def load_manifest(model_dir: str, name: str) -> dict[str, np.ndarray]:
    """Load ``<model_dir>/<name>-weights_manifest.json`` and its shards into numpy arrays."""
    with open(os.path.join(model_dir, f"{name}-weights_manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        parts = []
        for p in group["paths"]:
            with open(os.path.join(model_dir, p), "rb") as f:
                parts.append(f.read())
        for k, v in decode_group(b"".join(parts), group["weights"]).items():
            if k in weights:
                raise ValueError(f"duplicate weight name {k}")
            weights[k] = v
    return weights


def manifest_files(model_dir: str, name: str) -> list[str]:
    """File names (relative to model_dir) that make up a model: the manifest and its shards."""
    with open(os.path.join(model_dir, f"{name}-weights_manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    return [f"{name}-weights_manifest.json"] + [p for g in manifest for p in g["paths"]]


if __name__ == "__main__":
    import sys

    w = load_manifest(sys.argv[1], sys.argv[2])
    for k, v in w.items():
        print(f"{k:70s} {str(list(v.shape)):22s} {v.dtype}")
