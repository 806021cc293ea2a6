#!/usr/bin/env python3
"""Convert the face-api (@vladmandic/face-api 1.7.15) TF.js weights into ONNX graphs.

    python3 models/scripts/convert.py --package /path/to/unpacked/npm/package --out models/
    python3 models/scripts/convert.py --dlib /path/to/face_recognition_models-0.3.0.tar.gz --out models/

writes (opset 17, IR version 8, float32, batch dimension "N" dynamic, byte-for-byte reproducible):

  face_recognition.onnx    input [N,3,150,150] raw RGB 0..255 -> descriptor [N,128]
  tiny_face_detector.onnx  input [N,3,H,W] raw RGB 0..255 (H, W multiples of 32) -> raw [N,25,H/32,W/32]
  ssd_mobilenetv1.onnx     input [N,3,H,W] raw RGB 0..255 (512x512 or its top-left cut) -> boxes [N,M,4], scores [N,M]
  face_landmark_68.onnx    input [N,3,112,112] raw RGB 0..255 -> landmarks [N,136]
  face_recognition_dlib.onnx  (--dlib) dlib's own float weights of the same recognition net
                           (PyPI face_recognition_models 0.3.0, read by dlib_weights.py), in the
                           same graph as face_recognition.onnx: identical nodes and initializer
                           names/shapes, only the values differ (normalisation / 256, as dlib)

Each graph is a transcription of the TypeScript in package/src/ (file names cited per builder).
TF 'same' padding is written as explicit (possibly asymmetric, extra at bottom/right) ONNX pads.
Only plain ops are used (Conv incl. depthwise group=C, Add, Sub, Mul, Div, Relu, LeakyRelu, Clip,
MaxPool, AveragePool, GlobalAveragePool, Pad, Concat, Reshape, Transpose, MatMul, Sigmoid, Exp,
Slice, Flatten); batch norms, scale layers and the SSD anchors are folded / precomputed in numpy.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tfjs_weights import load_manifest  # noqa: E402

OPSET = 17
IR_VERSION = 8
PACKAGE_NAME = "@vladmandic/face-api"
PACKAGE_VERSION = "1.7.15"
PRODUCER = "facerec models/scripts/convert.py"

# Normalisations used by face-api (package/src/...)
MEAN_RGB_FACE = (122.782, 117.001, 104.298)  # faceRecognitionNet, faceFeatureExtractor
MEAN_RGB_TINY = (117.001, 114.697, 97.404)  # tinyFaceDetector/const.ts
SSD_BN_EPSILON = 0.0010000000474974513  # ssdMobilenetv1/mobileNetV1.ts


def tf_same_pads(size: int, k: int, s: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding for one spatial axis: (pad_begin, pad_end, out_size)."""
    out = math.ceil(size / s)
    total = max(0, (out - 1) * s + k - size)
    return total // 2, total - total // 2, out


def valid_out(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


class Graph:
    """Tiny ONNX graph builder with deterministic, readable names."""

    # When True, a Conv whose TF-'SAME' padding is asymmetric gets an explicit zero Pad node in
    # front of it instead (for ONNX importers without asymmetric conv padding). Not the default.
    split_asymmetric_conv_pads = False

    def __init__(self, name: str):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._names: Counter = Counter()
        self._const_cache: dict[tuple, str] = {}

    def fresh(self, base: str) -> str:
        base = base.replace("/", "_")
        self._names[base] += 1
        n = self._names[base]
        return base if n == 1 else f"{base}_{n}"

    def const(self, arr: np.ndarray, base: str) -> str:
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float64:
            raise TypeError(f"{base}: float64 constant")
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def shared(self, arr: np.ndarray, base: str) -> str:
        """A small constant that may be reused by several nodes (e.g. Clip bounds)."""
        arr = np.ascontiguousarray(arr)
        key = (base, arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._const_cache:
            self._const_cache[key] = self.const(arr, base)
        return self._const_cache[key]

    def op(self, op_type: str, inputs: list[str], base: str, output: str | None = None, **attrs) -> str:
        out = output or self.fresh(base)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{out}__{op_type}", **attrs))
        return out

    # --- common layers -------------------------------------------------------------------------
    def conv(self, x, w_oihw, b, base, stride=1, pads=(0, 0, 0, 0), group=1):
        """pads = (top, left, bottom, right) as ONNX wants [x1_begin, x2_begin, x1_end, x2_end]."""
        k_h, k_w = w_oihw.shape[2], w_oihw.shape[3]
        if self.split_asymmetric_conv_pads and tuple(pads[:2]) != tuple(pads[2:]):
            p = np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64)
            x = self.op("Pad", [x, self.shared(p, "pads_" + "_".join(map(str, pads)))], base + "_pad",
                        mode="constant")
            pads = (0, 0, 0, 0)
        ins = [x, self.const(w_oihw.astype(np.float32), base + "_w")]
        if b is not None:
            ins.append(self.const(np.asarray(b, np.float32), base + "_b"))
        return self.op("Conv", ins, base, kernel_shape=[k_h, k_w], strides=[stride, stride],
                       pads=list(pads), group=group, dilations=[1, 1])

    def normalize(self, x, mean_rgb, div):
        """(x - mean) / div, per channel, NCHW."""
        mean = np.array(mean_rgb, np.float32).reshape(1, 3, 1, 1)
        y = self.op("Sub", [x, self.const(mean, "mean_rgb")], "sub_mean")
        return self.op("Div", [y, self.const(np.array(div, np.float32), "div")], "div")

    def relu6(self, x, base):
        lo = self.shared(np.array(0.0, np.float32), "clip_min")
        hi = self.shared(np.array(6.0, np.float32), "clip_max")
        return self.op("Clip", [x, lo, hi], base)

    def finish(self, inputs, outputs, doc: str, meta: dict[str, str]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, producer_version="1")
        model.ir_version = IR_VERSION
        model.doc_string = doc
        model.model_version = 1
        for k in sorted(meta):
            p = model.metadata_props.add()
            p.key, p.value = k, meta[k]
        onnx.checker.check_model(model, full_check=True)
        return model


def tf_conv_w(f):
    """TF conv filter [kh,kw,in,out] -> ONNX [out,in,kh,kw]."""
    return np.ascontiguousarray(f.transpose(3, 2, 0, 1))


def tf_dw_w(f):
    """TF depthwise filter [kh,kw,C,1] -> ONNX grouped conv weight [C,1,kh,kw]."""
    assert f.shape[3] == 1, f.shape
    return np.ascontiguousarray(f.transpose(2, 3, 0, 1))


def same_conv_pads(h, k, s):
    b, e, out = tf_same_pads(h, k, s)
    return (b, b, e, e), out


def common_meta(model_files, extra):
    meta = {
        "source": f"npm {PACKAGE_NAME}@{PACKAGE_VERSION}, model/" + ", model/".join(model_files),
        "license": "MIT (face-api, see package/LICENSE)",
    }
    meta.update(extra)
    return meta


# =================================================================================================
# Face recognition (package/src/faceRecognitionNet/*.ts)
# =================================================================================================
# The residual blocks in forward order (face-api's names; dlib's anet_type has the same blocks).
RECOGNITION_BLOCKS = [("conv32_1", False), ("conv32_2", False), ("conv32_3", False),
                      ("conv64_down", True), ("conv64_1", False), ("conv64_2", False), ("conv64_3", False),
                      ("conv128_down", True), ("conv128_1", False), ("conv128_2", False),
                      ("conv256_down", True), ("conv256_1", False), ("conv256_2", False),
                      ("conv256_down_out", True)]


def recognition_conv_prefixes() -> list[str]:
    """Every conv (+ scale) layer of the recognition net in forward order."""
    return ["conv32_down"] + [f"{p}/{c}" for p, _ in RECOGNITION_BLOCKS for c in ("conv1", "conv2")]


def recognition_graph(convs: dict, fc: np.ndarray, mean_rgb, div: float, doc: str,
                      meta: dict[str, str]) -> onnx.ModelProto:
    """The recognition ResNet as ONNX. `convs[prefix]` = (weight OIHW, bias), float32 with the
    scale/affine layer already folded in; `fc` = [256,128] (no bias); input normalisation
    (x - mean_rgb) / div. face-api and dlib weights both go through here, so the two ONNX files
    have the same nodes and initializer names/shapes and differ only in values."""
    g = Graph("face_recognition_net")

    def conv_layer(x, prefix, stride, pad, relu):
        w, b = convs[prefix]
        y = g.conv(x, w, b, prefix, stride, (pad,) * 4)
        return g.op("Relu", [y], prefix + "_relu") if relu else y

    def residual(x, prefix):
        o = conv_layer(x, prefix + "/conv1", 1, 1, True)
        o = conv_layer(o, prefix + "/conv2", 1, 1, False)
        return g.op("Relu", [g.op("Add", [o, x], prefix + "_add")], prefix + "_relu")

    def residual_down(x, prefix, c_in, h_in):
        c_out = convs[prefix + "/conv1"][0].shape[0]
        o = conv_layer(x, prefix + "/conv1", 2, 0, True)  # convDown: stride 2 'valid'
        o = conv_layer(o, prefix + "/conv2", 1, 1, False)
        h_main, h_pool = valid_out(h_in, 3, 2), valid_out(h_in, 2, 2)
        pooled = g.op("AveragePool", [x], prefix + "_avgpool", kernel_shape=[2, 2], strides=[2, 2])
        if c_out != c_in:  # zero channels appended to the shortcut
            pads = np.array([0, 0, 0, 0, 0, c_out - c_in, 0, 0], np.int64)
            pooled = g.op("Pad", [pooled, g.const(pads, prefix + "_chanpad")], prefix + "_chanpad",
                          mode="constant")
        if h_main != h_pool:  # one zero row at the bottom and one zero column at the right
            assert h_pool == h_main + 1
            pads = np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64)
            o = g.op("Pad", [o, g.const(pads, prefix + "_hwpad")], prefix + "_hwpad", mode="constant")
        y = g.op("Relu", [g.op("Add", [pooled, o], prefix + "_add")], prefix + "_relu")
        return y, c_out, h_pool

    x = g.normalize("input", mean_rgb, div)
    x = conv_layer(x, "conv32_down", 2, 0, True)  # 7x7 s2 valid: 150 -> 72
    x = g.op("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2])  # 72 -> 35
    c, h = 32, valid_out(valid_out(150, 7, 2), 3, 2)
    for p, down in RECOGNITION_BLOCKS:
        if down:
            x, c, h = residual_down(x, p, c, h)
        else:
            x = residual(x, p)
    x = g.op("GlobalAveragePool", [x], "global_avg")  # out.mean([1, 2])
    x = g.op("Flatten", [x], "flatten", axis=1)
    g.op("MatMul", [x, g.const(fc, "fc")], "fc", output="descriptor")
    return g.finish(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 150, 150])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", 128])],
        doc, meta)


def build_face_recognition(model_dir: str) -> onnx.ModelProto:
    W = load_manifest(model_dir, "face_recognition_model")

    def folded(prefix):
        # convLayer.ts: conv2d(+bias) -> scale (x*w + b) -> [relu]; scale folded into the conv.
        f = W[f"{prefix}/conv/filters"].astype(np.float64)
        b = W[f"{prefix}/conv/bias"].astype(np.float64)
        s = W[f"{prefix}/scale/weights"].astype(np.float64)
        sb = W[f"{prefix}/scale/biases"].astype(np.float64)
        w = tf_conv_w(f) * s[:, None, None, None]
        bb = b * s + sb
        return w.astype(np.float32), bb.astype(np.float32)

    return recognition_graph(
        {p: folded(p) for p in recognition_conv_prefixes()}, W["fc"], MEAN_RGB_FACE, 255.0,
        "face-api FaceRecognitionNet (dlib-style ResNet). input: RGB 0..255 NCHW 150x150 face chip; "
        "normalisation (x - [122.782,117.001,104.298]) / 255 is inside the graph. output: 128-d "
        "descriptor, not L2-normalised.",
        common_meta(["face_recognition_model-weights_manifest.json", "face_recognition_model.bin"],
                    {"input_format": "RGB float 0..255 NCHW [N,3,150,150]"}),
    )


# =================================================================================================
# Face recognition from dlib's own float weights (PyPI face_recognition_models 0.3.0)
# =================================================================================================
DLIB_SDIST = "face_recognition_models-0.3.0.tar.gz"
DLIB_SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
DLIB_DAT_MEMBER = "face_recognition_models-0.3.0/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DLIB_DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"


def read_dlib_dat(path: str, verify_sha256: bool = True) -> bytes:
    """The .dat bytes, from the sdist tarball (read in place) or from the extracted .dat file."""
    import tarfile

    if path.endswith((".tar.gz", ".tgz")):
        with open(path, "rb") as f:
            got = sha256_bytes(f.read())
        if verify_sha256 and got != DLIB_SDIST_SHA256:
            raise SystemExit(f"{path}: sha256 {got} differs from the pinned {DLIB_SDIST_SHA256}")
        with tarfile.open(path, "r:gz") as t:
            member = t.extractfile(DLIB_DAT_MEMBER)
            if member is None:
                raise SystemExit(f"{path}: no {DLIB_DAT_MEMBER}")
            data = member.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    got = sha256_bytes(data)
    if verify_sha256 and got != DLIB_DAT_SHA256:
        raise SystemExit(f"{path}: .dat sha256 {got} differs from the pinned {DLIB_DAT_SHA256}")
    return data


def build_face_recognition_dlib(dat: bytes) -> onnx.ModelProto:
    """dlib_face_recognition_resnet_model_v1 (dlib_weights.py reads it and checks that it is
    dnn_face_recognition_ex.cpp's anet_type) -> the same graph as build_face_recognition."""
    import dlib_weights

    net = dlib_weights.parse(dat)
    L = net.layers
    # con + affine pairs in forward order, named like face-api's layers
    pairs = [(L[i], L[i + 1]) for i in range(len(L) - 1) if L[i].kind == "con"]
    assert all(a.kind == "affine" and a.attrs["mode"] == "conv" for _, a in pairs)
    prefixes = recognition_conv_prefixes()
    assert len(pairs) == len(prefixes), (len(pairs), len(prefixes))
    convs = {}
    for prefix, (con, aff) in zip(prefixes, pairs):
        # the padding the shared graph uses: 'valid' for the 7x7 and the stride-2 convs, else 1
        want_pad = (0, 0) if con.attrs["stride"] == (2, 2) else (1, 1)
        assert con.attrs["padding"] == want_pad, (prefix, con.attrs)
        assert (prefix.endswith("_down/conv1") or prefix.endswith("_out/conv1")
                or prefix == "conv32_down") == (con.attrs["stride"] == (2, 2)), prefix
        # conv (+bias) then affine x*gamma + beta, folded; dlib's con is a cross-correlation
        # like ONNX Conv, filters are [out, in, kh, kw] already
        gamma = aff.arrays["gamma"].astype(np.float64)
        w = con.arrays["filters"].astype(np.float64) * gamma[:, None, None, None]
        b = con.arrays["biases"].astype(np.float64) * gamma + aff.arrays["beta"].astype(np.float64)
        convs[prefix] = (w.astype(np.float32), b.astype(np.float32))
    for layer in L:  # pooling layers without padding, as the shared graph assumes
        if layer.kind in ("max_pool", "avg_pool"):
            assert layer.attrs["padding"] == (0, 0), layer.attrs
    fc = L[-1]
    assert fc.kind == "fc" and not fc.attrs["bias"] and fc.arrays["weights"].shape == (256, 128)
    assert net.input["size"] == (150, 150)
    mean = tuple(float(np.float32(v)) for v in net.input["avg_rgb"])  # float32 values in the file
    assert np.allclose(mean, MEAN_RGB_FACE, atol=1e-4), mean
    return recognition_graph(
        convs, fc.arrays["weights"], mean, 256.0,
        "dlib dlib_face_recognition_resnet_model_v1 (dnn_face_recognition_ex.cpp anet_type), float "
        "weights. input: RGB 0..255 NCHW 150x150 face chip; normalisation as dlib's "
        "input_rgb_image_sized, (x - [122.782,117.001,104.298]) / 256, is inside the graph. output: "
        "128-d descriptor (loss_metric: not normalised; same person if distance < 0.6).",
        {"source": f"PyPI face_recognition_models==0.3.0 ({DLIB_SDIST}), "
                   f"{DLIB_DAT_MEMBER.split('/', 1)[1]}",
         "license": "CC0 1.0 (face_recognition_models LICENSE; dlib-models README: public domain)",
         "input_format": "RGB float 0..255 NCHW [N,3,150,150]"},
    )


# =================================================================================================
# Tiny face detector (package/src/tinyYolov2/TinyYolov2Base.ts runMobilenet, tinyFaceDetector/*)
# =================================================================================================
def tiny_pool_pads(size: int) -> list:
    """The (begin, end) pads of the tiny detector's six 'SAME' max-pools at input side `size`."""
    h, pads = valid_out(size, 3, 1), []
    for stride in (2, 2, 2, 2, 2, 1):
        b, e, h = tf_same_pads(h, 2, stride)
        pads.append((b, e))
    return pads


def build_tiny_face_detector(model_dir: str, size: int = 416) -> onnx.ModelProto:
    W = load_manifest(model_dir, "tiny_face_detector_model")
    g = Graph("tiny_face_detector")

    def leaky(x, base):  # leaky.ts: relu(x - 0.1x) + 0.1x == LeakyRelu(alpha=0.1)
        return g.op("LeakyRelu", [x], base + "_leaky", alpha=0.10000000149011612)

    def maxpool_same(x, h, stride, base):
        b, e, out = tf_same_pads(h, 2, stride)
        y = g.op("MaxPool", [x], base, kernel_shape=[2, 2], strides=[stride, stride], pads=[b, b, e, e])
        return y, out

    x = g.normalize("input", MEAN_RGB_TINY, 255.0)
    # conv0: convLayer(x, conv0, 'valid') + leaky
    x = leaky(g.conv(x, tf_conv_w(W["conv0/filters"]), W["conv0/bias"], "conv0"), "conv0")
    h = valid_out(size, 3, 1)
    x, h = maxpool_same(x, h, 2, "maxpool0")
    for i in range(1, 6):
        # depthwiseSeparableConv.ts: pad 1 all sides, separable 'valid', + bias, leaky
        dw = W[f"conv{i}/depthwise_filter"]
        x = g.conv(x, tf_dw_w(dw), None, f"conv{i}_dw", 1, (1, 1, 1, 1), group=dw.shape[2])
        x = g.conv(x, tf_conv_w(W[f"conv{i}/pointwise_filter"]), W[f"conv{i}/bias"], f"conv{i}_pw")
        x = leaky(x, f"conv{i}")
        x, h = maxpool_same(x, h, 2 if i < 5 else 1, f"maxpool{i}")
    # no conv6/conv7 in this model; conv8: 1x1 'valid' + bias, no activation
    assert "conv6/bias" not in W and "conv7/bias" not in W
    g.op("Conv", [x, g.const(tf_conv_w(W["conv8/filters"]), "conv8_w"), g.const(W["conv8/bias"], "conv8_b")],
         "conv8", output="raw", kernel_shape=[1, 1], strides=[1, 1], pads=[0, 0, 0, 0], group=1,
         dilations=[1, 1])
    # The graph is fully convolutional: its 'SAME' pooling pads are the same for every side
    # that is a multiple of 32, so height and width stay free (the grid is side / 32).
    for k in range(1, 40):
        assert tiny_pool_pads(32 * k) == tiny_pool_pads(size), k
    return g.finish(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["N", 25, "H/32", "W/32"])],
        "face-api TinyFaceDetector (tiny-YOLOv2 with separable convs). input: RGB 0..255 NCHW, any "
        "height and width that are multiples of 32 (face-api uses 416); normalisation "
        "(x - [117.001,114.697,97.404]) / 255 inside the graph. output: raw grid "
        "[N, 5 anchors x (tx,ty,tw,th,score), H/32, W/32].",
        common_meta(["tiny_face_detector_model-weights_manifest.json", "tiny_face_detector_model.bin"],
                    {"input_format": "RGB float 0..255 NCHW [N,3,H,W], H and W multiples of 32",
                     "anchors": "1.603231,2.094468;6.041143,7.080126;2.882459,3.518061;"
                                "4.266906,5.178857;9.041765,10.66308"}),
    )


# =================================================================================================
# SSD MobileNetV1 (package/src/ssdMobilenetv1/*.ts)
# =================================================================================================
def ssd_conv_pads(h: int, k: int, s: int):
    """SSD's conv pads (top, left, bottom, right) and output side at input side `h`: TF 'SAME' at
    every even side (all of them at 512), but nothing before and k-1 after on a stride-2 axis,
    so that an odd side (a 512-wide input cut to 352 rows has 11 rows after /32) keeps its cells
    where the 512 layout has them (TF 'SAME' would pad one row before and shift them by half a
    cell). At an even side the extra row after is never read."""
    if s == 1:
        b, e, out = tf_same_pads(h, k, s)
        assert b == e, (h, k)
        return (b, b, e, e), out
    assert s == 2, s
    for even in (2 * h, 512):
        assert tf_same_pads(even, k, s)[0] == 0, (even, k)
    out = math.ceil(h / 2)
    assert (h + k - 1 - k) // 2 + 1 == out
    return (0, 0, k - 1, k - 1), out


def build_ssd_mobilenetv1(model_dir: str) -> onnx.ModelProto:
    W = load_manifest(model_dir, "ssd_mobilenetv1_model")
    g = Graph("ssd_mobilenetv1")
    size = 512

    def pointwise(x, h, prefix, stride, base):
        # pointwiseConvLayer.ts: conv2d 'same' (1x1 or 3x3) + batch_norm_offset, clip 0..6
        f = W[f"{prefix}/weights"]
        pads, h = ssd_conv_pads(h, f.shape[0], stride)
        y = g.conv(x, tf_conv_w(f), W[f"{prefix}/convolution_bn_offset"], base, stride, pads)
        return g.relu6(y, base + "_relu6"), h

    def depthwise(x, h, idx, stride):
        # mobileNetV1.ts depthwiseConvLayer: depthwiseConv2d 'same' -> batchNorm(eps) -> clip 0..6
        p = f"MobilenetV1/Conv2d_{idx}_depthwise"
        f = W[f"{p}/depthwise_weights"].astype(np.float64)
        gamma = W[f"{p}/BatchNorm/gamma"].astype(np.float64)
        beta = W[f"{p}/BatchNorm/beta"].astype(np.float64)
        mean = W[f"{p}/BatchNorm/moving_mean"].astype(np.float64)
        var = W[f"{p}/BatchNorm/moving_variance"].astype(np.float64)
        k = gamma / np.sqrt(var + SSD_BN_EPSILON)
        w = tf_dw_w(f) * k[:, None, None, None]
        b = beta - mean * k
        pads, h = ssd_conv_pads(h, 3, stride)
        base = f"conv{idx}_dw"
        y = g.conv(x, w.astype(np.float32), b.astype(np.float32), base, stride, pads, group=f.shape[2])
        return g.relu6(y, base + "_relu6"), h

    # SsdMobilenetv1.ts: x = batchTensor / 127.5 - 1
    x = g.op("Div", ["input", g.const(np.array(127.5, np.float32), "div")], "div")
    x = g.op("Sub", [x, g.const(np.array(1.0, np.float32), "one")], "sub_one")
    # mobileNetV1.ts
    x, h = pointwise(x, size, "MobilenetV1/Conv2d_0_pointwise", 2, "conv0")
    conv11, h11 = None, None
    for idx in range(1, 14):
        x, h = depthwise(x, h, idx, 2 if idx in (2, 4, 6, 12) else 1)
        x, h = pointwise(x, h, f"MobilenetV1/Conv2d_{idx}_pointwise", 1, f"conv{idx}_pw")
        if idx == 11:
            conv11, h11 = x, h
    # predictionLayer.ts
    feats = {"x": (x, h), "conv11": (conv11, h11)}
    y, hy = x, h
    for i in range(8):
        y, hy = pointwise(y, hy, f"Prediction/Conv2d_{i}_pointwise", 2 if i % 2 == 1 else 1, f"pred{i}")
        feats[f"pred{i}"] = (y, hy)
    sources = ["conv11", "x", "pred1", "pred3", "pred5", "pred7"]
    anchors = W["Output/extra_dim"].reshape(-1, 4).astype(np.float32)
    # outputLayer.ts decodeBoxesLayer: anchors as centre and size (float32 like tfjs).
    a_sizes = np.stack([anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]], axis=1).astype(np.float32)
    a_centers = (anchors[:, 0:2] + a_sizes / np.float32(2)).astype(np.float32)
    box_parts, cls_parts, center_parts, size_parts, n_anchors_total = [], [], [], [], 0
    for i, src in enumerate(sources):
        t, th = feats[src]
        p = f"Prediction/BoxPredictor_{i}"
        be, cp = [], []
        # boxPredictionLayer.ts: convLayer 1x1 'same' + bias; reshape NHWC -> [N, H*W*A, 4|3]
        for kind, depth, parts in (("BoxEncodingPredictor", 4, box_parts), ("ClassPredictor", 3, cls_parts)):
            f = W[f"{p}/{kind}/weights"]
            assert tuple(f.shape[:2]) == (1, 1), f.shape
            o = g.conv(t, tf_conv_w(f), W[f"{p}/{kind}/biases"], f"box{i}_{kind}")
            o = g.op("Transpose", [o], f"box{i}_{kind}_nhwc", perm=[0, 2, 3, 1])
            shape = g.shared(np.array([0, -1, depth], np.int64), f"shape_n_m1_{depth}")
            parts.append(g.op("Reshape", [o, shape], f"box{i}_{kind}_flat"))
            if depth == 4:
                nhwc = o
        # This layer's anchors, laid out [1, H, W, A, 2] on its grid at 512x512 and cut to the
        # grid the input gives (its top-left cells: the image sits at the top left of the input).
        n_a = W[f"{p}/ClassPredictor/biases"].shape[0] // 3
        layer = slice(n_anchors_total, n_anchors_total + th * th * n_a)
        n_anchors_total += th * th * n_a
        grid_hw = g.op("Shape", [nhwc], f"box{i}_grid", start=1, end=3)
        for arr, parts, name in ((a_centers, center_parts, "centers"), (a_sizes, size_parts, "sizes")):
            full = g.const(arr[layer].reshape(1, th, th, n_a, 2), f"anchor{i}_{name}")
            cut = g.op("Slice", [full, g.shared(np.array([0, 0], np.int64), "starts_0_0"), grid_hw,
                                 g.shared(np.array([1, 2], np.int64), "axes_1_2")], f"anchor{i}_{name}_cut")
            parts.append(g.op("Reshape", [cut, g.shared(np.array([0, -1, 2], np.int64), "shape_n_m1_2")],
                              f"anchor{i}_{name}_flat"))
    assert n_anchors_total == anchors.shape[0], (anchors.shape, n_anchors_total)
    enc = g.op("Concat", box_parts, "box_encodings", axis=1)  # [N,M,4], M = 5118 at 512x512
    cls = g.op("Concat", cls_parts, "class_predictions", axis=1)  # [N,M,3]
    sizes_c = g.op("Concat", size_parts, "anchor_sizes", axis=1)  # [1,M,2]
    centers_c = g.op("Concat", center_parts, "anchor_centers", axis=1)  # [1,M,2]

    def slice_last(t, start, end, base):
        return g.op("Slice", [t, g.shared(np.array([start], np.int64), f"starts_{start}"),
                              g.shared(np.array([end], np.int64), f"ends_{end}"),
                              g.shared(np.array([2], np.int64), "axes_2")], base)

    e01 = slice_last(enc, 0, 2, "enc_center")
    e23 = slice_last(enc, 2, 4, "enc_size")
    ctr = g.op("Div", [e01, g.const(np.array(10.0, np.float32), "ten")], "center_div10")
    ctr = g.op("Mul", [ctr, sizes_c], "center_mul")
    ctr = g.op("Add", [ctr, centers_c], "center")
    half = g.op("Div", [e23, g.const(np.array(5.0, np.float32), "five")], "size_div5")
    half = g.op("Exp", [half], "size_exp")
    half = g.op("Mul", [half, sizes_c], "size_mul")
    half = g.op("Div", [half, g.const(np.array(2.0, np.float32), "two")], "half_size")
    lo = g.op("Sub", [ctr, half], "box_min")
    hi = g.op("Add", [ctr, half], "box_max")
    g.op("Concat", [lo, hi], "boxes", output="boxes", axis=2)  # [ymin, xmin, ymax, xmax]
    # scores = sigmoid(classPredictions[..., 1])
    s = slice_last(cls, 1, 2, "face_logit")
    s = g.op("Sigmoid", [s], "face_prob")
    g.op("Flatten", [s], "scores", output="scores", axis=1)
    return g.finish(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", "M", 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "M"])],
        "face-api SsdMobilenetv1 face detector. input: RGB 0..255 NCHW 512x512, image zero-padded to "
        "square at bottom/right then resized; or the top-left H x W of that input, H and W multiples "
        "of 32 up to 512 (the rows and columns the image covers: each anchor grid is cut to its "
        "top-left cells); x/127.5-1 inside the graph. outputs: decoded boxes [ymin,xmin,ymax,xmax] "
        "relative to the 512x512 input (not clipped), face probability (sigmoid); M = 5118 anchors "
        "at 512x512. NMS not included (face-api: iou 0.5, maxResults 100, minConfidence 0.5).",
        common_meta(["ssd_mobilenetv1_model-weights_manifest.json", "ssd_mobilenetv1_model.bin"],
                    {"input_format": "RGB float 0..255 NCHW [N,3,H,W]: 512x512, or its top-left "
                                     "H x W (multiples of 32)",
                     "box_format": "ymin,xmin,ymax,xmax relative to the 512x512 input"}),
    )


# =================================================================================================
# 68-point landmarks (package/src/faceLandmarkNet/*, faceFeatureExtractor/*, faceProcessor/*)
# =================================================================================================
def build_face_landmark_68(model_dir: str) -> onnx.ModelProto:
    W = load_manifest(model_dir, "face_landmark_68_model")
    g = Graph("face_landmark_68_net")
    size = 112

    def sep_conv(x, h, prefix, stride):
        # common/depthwiseSeparableConv.ts: separableConv2d 'same' (stride on depthwise) + bias
        dw = W[f"{prefix}/depthwise_filter"]
        pads, h = same_conv_pads(h, 3, stride)
        base = prefix.replace("/", "_")
        y = g.conv(x, tf_dw_w(dw), None, base + "_dw", stride, pads, group=dw.shape[2])
        y = g.conv(y, tf_conv_w(W[f"{prefix}/pointwise_filter"]), W[f"{prefix}/bias"], base + "_pw")
        return y, h

    def dense_block4(x, h, prefix, first):
        # faceFeatureExtractor/denseBlock.ts denseBlock4 (isScaleDown = true)
        if first:
            f = W[f"{prefix}/conv0/filters"]
            pads, h = same_conv_pads(h, f.shape[0], 2)
            out1 = g.conv(x, tf_conv_w(f), W[f"{prefix}/conv0/bias"], f"{prefix}_conv0", 2, pads)
        else:
            out1, h = sep_conv(x, h, f"{prefix}/conv0", 2)
        out1 = g.op("Relu", [out1], f"{prefix}_out1")
        out2, _ = sep_conv(out1, h, f"{prefix}/conv1", 1)
        in3 = g.op("Relu", [g.op("Add", [out1, out2], f"{prefix}_add12")], f"{prefix}_in3")
        out3, _ = sep_conv(in3, h, f"{prefix}/conv2", 1)
        s23 = g.op("Add", [out2, out3], f"{prefix}_add23")
        in4 = g.op("Relu", [g.op("Add", [out1, s23], f"{prefix}_add123")], f"{prefix}_in4")
        out4, _ = sep_conv(in4, h, f"{prefix}/conv3", 1)
        s34 = g.op("Add", [out3, out4], f"{prefix}_add34")
        s234 = g.op("Add", [out2, s34], f"{prefix}_add234")
        y = g.op("Relu", [g.op("Add", [out1, s234], f"{prefix}_add1234")], f"{prefix}_out")
        return y, h

    x = g.normalize("input", MEAN_RGB_FACE, 255.0)
    h = size
    for i in range(4):
        x, h = dense_block4(x, h, f"dense{i}", i == 0)
    assert h == 7, h
    # avgPool 7x7 stride 2 'valid' on a 7x7 map == global average
    x = g.op("AveragePool", [x], "avgpool", kernel_shape=[7, 7], strides=[2, 2])
    x = g.op("Flatten", [x], "flatten", axis=1)
    x = g.op("MatMul", [x, g.const(W["fc/weights"], "fc_w")], "fc")  # fullyConnectedLayer.ts
    g.op("Add", [x, g.const(W["fc/bias"], "fc_b")], "fc_bias", output="landmarks")
    return g.finish(
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", 136])],
        "face-api FaceLandmark68Net. input: RGB 0..255 NCHW 112x112 face crop zero-padded to a centred "
        "square then resized; normalisation (x - [122.782,117.001,104.298]) / 255 inside the graph. "
        "output: raw fc output x0,y0,x1,y1,... relative (0..1) to the 112x112 padded square (before "
        "face-api's postProcess padding correction).",
        common_meta(["face_landmark_68_model-weights_manifest.json", "face_landmark_68_model.bin"],
                    {"input_format": "RGB float 0..255 NCHW [N,3,112,112]",
                     "output_format": "x0,y0,...,x67,y67 relative to the 112x112 padded square"}),
    )


BUILDERS = {
    "face_recognition": build_face_recognition,
    "tiny_face_detector": build_tiny_face_detector,
    "ssd_mobilenetv1": build_ssd_mobilenetv1,
    "face_landmark_68": build_face_landmark_68,
}


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# sha256 of the source files in package/model/ of @vladmandic/face-api@1.7.15
SOURCE_SHA256 = {
    "face_recognition_model-weights_manifest.json": "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
    "face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
    "tiny_face_detector_model-weights_manifest.json": "5d1af4849ac48d5b985f4a9b16010c512353ddd6fcc63d50fd0bc9e9e64296e5",
    "tiny_face_detector_model.bin": "b7503ce7df31039b1c43316a9b865cab6a70dd748cc602d3fa28b551503c3871",
    "ssd_mobilenetv1_model-weights_manifest.json": "888f744dffbc84f5f060d1f8427d9742341943a2dfaaf9205d10029b7e7a2955",
    "ssd_mobilenetv1_model.bin": "2835640602d53718aa6ae9a42896327eaa21beefed056c218d32ca7d79e1e2f8",
    "face_landmark_68_model-weights_manifest.json": "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9",
    "face_landmark_68_model.bin": "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b",
}


def check_package(package: str, verify_sha256: bool = True) -> str:
    """Check that `package` is the unpacked @vladmandic/face-api@1.7.15; return its model dir."""
    import json

    with open(os.path.join(package, "package.json"), encoding="utf-8") as f:
        pj = json.load(f)
    if pj.get("name") != PACKAGE_NAME or pj.get("version") != PACKAGE_VERSION:
        raise SystemExit(f"expected {PACKAGE_NAME}@{PACKAGE_VERSION}, found {pj.get('name')}@{pj.get('version')}")
    model_dir = os.path.join(package, "model")
    if verify_sha256:
        for fname, want in SOURCE_SHA256.items():
            with open(os.path.join(model_dir, fname), "rb") as f:
                got = sha256_bytes(f.read())
            if got != want:
                raise SystemExit(f"{fname}: sha256 {got} differs from the pinned {want}")
    return model_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", help="unpacked npm package dir (holds package.json, model/)")
    ap.add_argument("--dlib", metavar="PATH",
                    help=f"PyPI {DLIB_SDIST} (or the .dat in it): also write face_recognition_dlib.onnx")
    ap.add_argument("--out", required=True, help="output directory for the .onnx files")
    ap.add_argument("--only", nargs="*", choices=sorted(BUILDERS), help="convert only these models")
    ap.add_argument("--no-verify-sha256", action="store_true",
                    help="do not check the source weight files against the pinned sha256")
    ap.add_argument("--split-asymmetric-conv-pads", action="store_true",
                    help="emit Pad + Conv instead of asymmetric Conv pads (same results; the "
                         "committed files are made without this)")
    a = ap.parse_args(argv)
    Graph.split_asymmetric_conv_pads = a.split_asymmetric_conv_pads
    if not a.package and not a.dlib:
        ap.error("give --package and/or --dlib")
    os.makedirs(a.out, exist_ok=True)
    jobs = []
    if a.package:
        model_dir = check_package(a.package, not a.no_verify_sha256)
        jobs += [(name, lambda name=name: BUILDERS[name](model_dir)) for name in a.only or list(BUILDERS)]
    if a.dlib:
        dat = read_dlib_dat(a.dlib, not a.no_verify_sha256)
        jobs.append(("face_recognition_dlib", lambda: build_face_recognition_dlib(dat)))
    for name, build in jobs:
        model = build()
        data = serialize(model)
        path = os.path.join(a.out, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(data)
        ops = dict(sorted(Counter(n.op_type for n in model.graph.node).items()))
        params = sum(math.prod(t.dims) for t in model.graph.initializer)
        print(f"{path}: {len(data)} bytes sha256 {sha256_bytes(data)}")
        print(f"    {len(model.graph.node)} nodes {ops}; {params} parameters")


if __name__ == "__main__":
    main()
