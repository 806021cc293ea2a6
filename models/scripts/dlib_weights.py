"""Read dlib's serialisation of the face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``).

The file is ``dlib::serialize(anet_type)`` of dlib's ``examples/dnn_face_recognition_ex.cpp``::

    residual<N>      = add_prev1<block<N,1,tag1<SUBNET>>>
    residual_down<N> = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<SUBNET>>>>>>
    block<N,stride>  = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,stride,stride,SUBNET>>>>>
    ares<N>          = relu<residual<N>>,  ares_down<N> = relu<residual_down<N>>
    anet_type = loss_metric<fc_no_bias<128,avg_pool_everything<
                  ares_down<256,                                        (alevel0)
                  ares<256,ares<256,ares_down<256,                      (alevel1)
                  ares<128,ares<128,ares_down<128,                      (alevel2)
                  ares<64,ares<64,ares<64,ares_down<64,                 (alevel3)
                  ares<32,ares<32,ares<32,                              (alevel4)
                  max_pool<3,3,2,2,relu<affine<con<32,7,7,2,2,
                  input_rgb_image_sized<150>>>>>>>>>>...>>>

Encoding (dlib/serialize.h, dlib/dnn/{core,layers,input,loss,tensor}.h):

* integers: one byte ``n | (0x80 if negative)``, then ``n`` little-endian magnitude bytes;
* ``float``/``double``: integer mantissa then integer exponent, value = mantissa * 2**exponent
  (exponent 32000/32001/32002 mean +inf/-inf/nan);
* ``bool``: one byte, ``'1'`` or ``'0'``; strings: integer length + bytes;
* ``tensor`` version 2: version, num_samples, k, nr, nc, then the values as little-endian IEEE
  float32 (version 1 used the float encoding above per value; not used by this file);
* ``alias_tensor``: version 1, num_samples, k, nr, nc (a view into a layer's ``params``);
* a network is serialised outside-in: ``add_loss_layer`` (version 1, loss details, subnet),
  ``add_layer`` (version 2: subnet first, then its layer details, three bools and the tensors
  x_grad, cached_output, params_grad), ``add_tag_layer``/``add_skip_layer`` (version 1,
  subnet; tag ids are in the C++ type, not in the file), and at the bottom the ``add_layer``
  over the input layer (version 2 or 3: input layer, details, three bools, x_grad,
  cached_output, grad_final, and for version 3 the sample expansion factor).

``load(path)`` returns a :class:`DlibNet`: the loss and input layer settings and the layers in
*forward* order (input side first). The tag/skip markers (indistinguishable in the file) are
resolved by matching the layer sequence against ``anet_type`` above; a file with any other
structure is rejected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(ValueError):
    pass


class Reader:
    """Sequential reader of dlib's serialisation primitives."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} bytes)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        head = self._take(1)[0]
        size, neg = head & 0x0F, head & 0x80
        if head & 0x70 or size > 8:
            raise DlibFormatError(f"bad integer header 0x{head:02x} at byte {self.pos - 1}")
        v = int.from_bytes(self._take(size), "little")
        return -v if neg else v

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {c!r} at byte {self.pos - 1}")
        return c == b"1"

    def string(self) -> str:
        n = self.int()
        if not 0 <= n <= 1024:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("ascii")

    def expect(self, what: str, got, want):
        if got != want:
            raise DlibFormatError(f"{what}: expected {want!r}, found {got!r} (byte {self.pos})")

    def tensor(self) -> np.ndarray:
        """A dlib tensor as float32 [num_samples, k, nr, nc]."""
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} is not supported (only 2) at byte {self.pos}")
        shape = tuple(self.int() for _ in range(4))
        n = math.prod(shape)
        return np.frombuffer(self._take(4 * n), "<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.expect("alias_tensor version", self.int(), 1)
        return tuple(self.int() for _ in range(4))


@dataclass
class Layer:
    """One computational layer (``kind``: con, affine, relu, max_pool, avg_pool, add_prev, fc)
    or a marker (``tag``/``skip``, with ``tag`` the id); ``arrays`` are float32 numpy arrays."""

    kind: str
    attrs: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    tag: int | None = None

    def describe(self) -> str:
        a = ",".join(f"{k}={v}" for k, v in self.attrs.items() if k != "multipliers")
        t = "" if self.tag is None else str(self.tag)
        return f"{self.kind}{t}" + (f"({a})" if a else "")


@dataclass
class DlibNet:
    loss: dict
    input: dict
    layers: list[Layer]  # forward order


def _split(params: np.ndarray, shapes: list[tuple[int, ...]], what: str) -> list[np.ndarray]:
    flat = params.reshape(-1)
    total = sum(math.prod(s) for s in shapes)
    if flat.size != total:
        raise DlibFormatError(f"{what}: params has {flat.size} values, the aliases need {total}")
    out, off = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(np.ascontiguousarray(flat[off:off + n].reshape(s)))
        off += n
    return out


def _details(r: Reader) -> Layer:
    """A layer's details object (layers.h / input.h), identified by its version string."""
    name = r.string()
    if name == "con_4":
        params = r.tensor()
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(7))
        fshape, bshape = r.alias_tensor(), r.alias_tensor()
        lr = [r.float() for _ in range(4)]  # learning-rate / weight-decay multipliers
        filters, biases = _split(params, [fshape, bshape], name)
        if fshape[0] != num_filters or fshape[2:] != (nr, nc):
            raise DlibFormatError(f"con_4: filter alias {fshape} vs {num_filters}x{nr}x{nc}")
        return Layer("con", {"num_filters": num_filters, "kernel": (nr, nc), "stride": (stride_y, stride_x),
                             "padding": (pad_y, pad_x), "multipliers": lr},
                     {"filters": filters, "biases": biases.reshape(-1)})
    if name == "affine_":
        params = r.tensor()
        gshape, bshape = r.alias_tensor(), r.alias_tensor()
        mode = r.int()  # 0 = CONV_MODE (per channel), 1 = FC_MODE
        gamma, beta = _split(params, [gshape, bshape], name)
        return Layer("affine", {"mode": {0: "conv", 1: "fc"}.get(mode, mode)},
                     {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (r.int() for _ in range(6))
        return Layer(name[:-2], {"window": (nr, nc), "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)})
    if name == "relu_":
        return Layer("relu")
    if name == "add_prev_":
        return Layer("add_prev")
    if name == "fc_2":
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor()
        wshape, bshape = r.alias_tensor(), r.alias_tensor()
        bias_mode = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        lr = [r.float() for _ in range(4)]
        shapes = [wshape] + ([bshape] if bias_mode == 0 else [])
        parts = _split(params, shapes, name)
        arrays = {"weights": parts[0].reshape(num_inputs, num_outputs)}  # output = input @ weights
        if bias_mode == 0:
            arrays["biases"] = parts[1].reshape(-1)
        return Layer("fc", {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias": bias_mode == 0,
                            "multipliers": lr}, arrays)
    raise DlibFormatError(f"unsupported layer '{name}' at byte {r.pos}")


def _add_layer_tail(r: Reader, input_layer_version: int | None = None):
    """The three bools and the state tensors after an add_layer's details (all empty in a
    saved, cleaned network; read and discarded)."""
    for _ in range(3):
        r.bool()
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    r.tensor()  # params_grad, or grad_final for the add_layer over the input layer
    if input_layer_version == 3:
        r.int()  # _sample_expansion_factor


def parse(data: bytes) -> DlibNet:
    r = Reader(data)
    r.expect("add_loss_layer version", r.int(), 1)
    loss_name = r.string()
    if loss_name != "loss_metric_2":
        raise DlibFormatError(f"expected loss_metric_2, found {loss_name}")
    loss = {"type": loss_name, "margin": r.float(), "distance_threshold": r.float()}

    # Outside-in headers: add_layer version 2, tag/skip version 1, until the input layer's
    # add_layer (version 2 or 3) directly followed by the "input_rgb_image_sized" string.
    headers: list[str] = []
    while True:
        v = r.int()
        save = r.pos
        try:
            s = r.string()
        except (DlibFormatError, UnicodeDecodeError):
            s = None
        if s == "input_rgb_image_sized":
            if v not in (2, 3):
                raise DlibFormatError(f"input add_layer version {v}")
            input_version = v
            break
        r.pos = save
        if v == 2:
            headers.append("add_layer")
        elif v == 1:
            headers.append("tag_or_skip")
        else:
            raise DlibFormatError(f"unexpected layer version {v} at byte {r.pos}")
        if len(headers) > 1000:
            raise DlibFormatError("no input layer found")
    avg = tuple(r.float() for _ in range(3))
    size = (r.int(), r.int())
    inp = {"type": "input_rgb_image_sized", "avg_rgb": avg, "size": size}

    # Inside-out: the input add_layer's details, then each outer add_layer's details.
    layers = [_details(r)]
    _add_layer_tail(r, input_version)
    for h in reversed(headers):
        if h == "tag_or_skip":
            layers.append(Layer("tag_or_skip"))
        else:
            layers.append(_details(r))
            _add_layer_tail(r)
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes")
    _resolve_tags(layers)
    return DlibNet(loss, inp, layers)


def anet_type() -> list[tuple]:
    """dnn_face_recognition_ex.cpp's anet_type in forward order: (kind, tag id, attrs)."""
    seq: list[tuple] = []

    def con(n, k, s):
        seq.append(("con", None, {"num_filters": n, "kernel": (k, k), "stride": (s, s)}))

    def block(n, stride):
        con(n, 3, stride)
        seq.extend([("affine", None, {}), ("relu", None, {})])
        con(n, 3, 1)
        seq.append(("affine", None, {}))

    def ares(n):
        seq.append(("tag", 1, {}))
        block(n, 1)
        seq.extend([("add_prev", 1, {}), ("relu", None, {})])

    def ares_down(n):
        seq.append(("tag", 1, {}))
        block(n, 2)
        seq.extend([("tag", 2, {}), ("skip", 1, {}),
                    ("avg_pool", None, {"window": (2, 2), "stride": (2, 2)}),
                    ("add_prev", 2, {}), ("relu", None, {})])

    con(32, 7, 2)
    seq.extend([("affine", None, {}), ("relu", None, {}),
                ("max_pool", None, {"window": (3, 3), "stride": (2, 2)})])
    for n, downs, plain in ((32, 0, 3), (64, 1, 3), (128, 1, 2), (256, 1, 2), (256, 1, 0)):
        for _ in range(downs):
            ares_down(n)
        for _ in range(plain):
            ares(n)
    seq.append(("avg_pool", None, {"window": (0, 0), "stride": (1, 1)}))  # avg_pool_everything
    seq.append(("fc", None, {"num_outputs": 128, "bias": False}))
    return seq


def _resolve_tags(layers: list[Layer]) -> None:
    want = anet_type()
    got = [layer.kind for layer in layers]
    if len(got) != len(want):
        raise DlibFormatError(f"{len(got)} layers, anet_type has {len(want)}")
    for i, (layer, (kind, tag, attrs)) in enumerate(zip(layers, want)):
        if layer.kind == "tag_or_skip" and kind in ("tag", "skip"):
            layer.kind, layer.tag = kind, tag
        elif layer.kind == kind:
            layer.tag = tag
        else:
            raise DlibFormatError(f"layer {i}: {layer.kind}, anet_type has {kind}")
        for k, v in attrs.items():
            if layer.attrs.get(k) != v:
                raise DlibFormatError(f"layer {i} ({kind}): {k}={layer.attrs.get(k)}, anet_type has {v}")


def load(path: str) -> DlibNet:
    with open(path, "rb") as f:
        return parse(f.read())


if __name__ == "__main__":  # print the layers
    import sys

    net = load(sys.argv[1])
    print("loss:", net.loss)
    print("input:", net.input)
    n_params = 0
    for i, layer in enumerate(net.layers):
        shapes = {k: list(v.shape) for k, v in layer.arrays.items()}
        n_params += sum(v.size for v in layer.arrays.values())
        print(f"{i:3d} {layer.describe()} {shapes if shapes else ''}")
    print(f"{len(net.layers)} layers, {n_params} parameters")
