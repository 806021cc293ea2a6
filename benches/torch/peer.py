"""Eager PyTorch peer for facerec's GPU throughput figures.

The four face-api networks in models/ written as torch.nn.Module classes (the conv/pool/add
structure of each ONNX graph, described in the model cards), weights loaded from the ONNX
initializers. Every module takes raw RGB 0..255 in NCHW, as the ONNX graphs do, and
normalises inside. Also `search`: exact nearest neighbour of 128-d queries among
--gallery-faces rows (a matmul and a min), the peer of facerec's gallery search.

  --check   compare each module with onnxruntime on the same ONNX file and real inputs
            (models/parity/*.png; with FACEAPI_DIR set, also the package's demo photos);
            exit 1 if a difference is over the tolerance.
  --bench   items/s per net and batch, outputs copied back to the host inside each timed
            iteration; --json PATH writes the figures (format: benches/gpu/report.py).

usage: python3 benches/torch/peer.py --check [--device cpu]
       python3 benches/torch/peer.py --bench --batches 1,16,64,256 --json torch-fp32.json
       python3 benches/torch/peer.py --bench --batches 1,16,64,256 --fp16 --json torch-fp16.json
"""
import argparse
import datetime
import glob
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image
from torch import nn

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODELS = os.path.join(ROOT, "models")
PARITY = os.path.join(MODELS, "parity")
NETS = ("recognition", "ssd", "tiny", "landmarks")  # the ONNX nets
BENCH_NETS = NETS + ("search",)
# Relative tolerance: max |torch - onnxruntime| / max |onnxruntime|, per output.
RTOL_F32 = 1e-3


class Weights:
    """The initializers of one ONNX file, handed out by name; remembers which were taken."""

    def __init__(self, path):
        graph = onnx.load(path).graph
        self.arrays = {i.name: numpy_helper.to_array(i).copy() for i in graph.initializer}
        self.taken = set()

    def take(self, name):
        self.taken.add(name)
        return torch.from_numpy(self.arrays[name])

    def scalar(self, name):
        return float(self.take(name).reshape(()))

    def untaken(self):
        """Float tensors (not scalars, not the integer shapes/pads) that no module used."""
        return sorted(n for n, a in self.arrays.items()
                      if n not in self.taken and a.dtype.kind == "f" and a.size > 1)


def same_pads(size, kernel, stride):
    """TF 'SAME' padding (before, after) of one axis: the extra one goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv(nn.Conv2d):
    """ONNX Conv from `{name}_w` / `{name}_b`; `same` pads as TF does (asymmetric at stride 2)."""

    def __init__(self, w, name, stride=1, same=True, depthwise=False):
        weight = w.take(f"{name}_w")
        bias = w.take(f"{name}_b") if f"{name}_b" in w.arrays else None
        out_c, in_per_group, k, _ = weight.shape
        groups = out_c if depthwise else 1
        # At stride 1 'same' is symmetric: the conv's own padding; at stride 2 it depends on
        # the input size (one extra row/column at the bottom/right for even sizes).
        pad = k // 2 if same and stride == 1 else 0
        super().__init__(in_per_group * groups, out_c, k, stride, pad, groups=groups, bias=bias is not None)
        self.same = same and stride > 1 and k > 1
        with torch.no_grad():
            self.weight.copy_(weight)
            if bias is not None:
                self.bias.copy_(bias)

    def forward(self, x):
        if self.same:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = same_pads(x.shape[2], k, s)
            left, right = same_pads(x.shape[3], k, s)
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def identity(x):
    return x


def leaky(x):
    """face-api's leaky ReLU, relu(x - 0.1x) + 0.1x == LeakyRelu(alpha=0.1)."""
    return F.leaky_relu(x, 0.1)


def max_pool_same(x, kernel, stride):
    """TF 'SAME' max pool: padded cells never win (ONNX MaxPool pads)."""
    top, bottom = same_pads(x.shape[2], kernel, stride)
    left, right = same_pads(x.shape[3], kernel, stride)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class Normalise(nn.Module):
    """(x - mean_rgb) / div, the first two nodes of the recognition, tiny and landmark graphs."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("mean", w.take("mean_rgb").reshape(1, 3, 1, 1))
        self.div = w.scalar("div")

    def forward(self, x):
        return (x - self.mean) / self.div


# --- face_recognition.onnx: dlib's ResNet (face_recognition.md) -------------------------------

class Residual(nn.Module):
    """relu(x + conv2(relu(conv1(x)))), 3x3 'same' convs."""

    def __init__(self, w, name):
        super().__init__()
        self.conv1 = Conv(w, f"{name}_conv1")
        self.conv2 = Conv(w, f"{name}_conv2")

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class Down(nn.Module):
    """Main path conv 3x3/2 'valid' + conv 3x3; shortcut avgpool 2/2, zero channels appended,
    the main path padded by one row/column at the bottom/right where it is the smaller."""

    def __init__(self, w, name):
        super().__init__()
        self.conv1 = Conv(w, f"{name}_conv1", stride=2, same=False)
        self.conv2 = Conv(w, f"{name}_conv2")

    def forward(self, x):
        main = self.conv2(F.relu(self.conv1(x)))
        short = F.avg_pool2d(x, 2, 2)
        extra_c = main.shape[1] - short.shape[1]
        if extra_c:
            short = F.pad(short, (0, 0, 0, 0, 0, extra_c))
        extra_hw = short.shape[2] - main.shape[2]
        if extra_hw:
            main = F.pad(main, (0, extra_hw, 0, extra_hw))
        return F.relu(short + main)


class Recognition(nn.Module):
    """[N,3,150,150] RGB 0..255 -> descriptor [N,128]."""

    def __init__(self, w):
        super().__init__()
        self.norm = Normalise(w)
        self.stem = Conv(w, "conv32_down", stride=2, same=False)
        blocks = ["conv32_1", "conv32_2", "conv32_3", "conv64_down", "conv64_1", "conv64_2",
                  "conv64_3", "conv128_down", "conv128_1", "conv128_2", "conv256_down",
                  "conv256_1", "conv256_2", "conv256_down_out"]
        self.blocks = nn.Sequential(*(Down(w, b) if b.endswith(("_down", "_down_out"))
                                      else Residual(w, b) for b in blocks))
        self.fc = nn.Linear(256, 128, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(w.take("fc").T)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(self.norm(x))), 3, 2)
        x = self.blocks(x)
        return (self.fc(x.mean(dim=(2, 3))),)


# --- ssd_mobilenetv1.onnx: MobileNetV1 + SSD heads (ssd_mobilenetv1.md) ------------------------

class Separable(nn.Module):
    """Depthwise 3x3 'same' then pointwise 1x1, each followed by `act`; `dw_act=False` leaves
    the depthwise output linear (tiny detector, landmark net)."""

    def __init__(self, w, name, stride=1, act=F.relu6, dw_act=True):
        super().__init__()
        self.dw = Conv(w, f"{name}_dw", stride=stride, depthwise=True)
        self.pw = Conv(w, f"{name}_pw")
        self.act, self.dw_act = act, dw_act

    def forward(self, x):
        x = self.dw(x)
        if self.dw_act:
            x = self.act(x)
        return self.act(self.pw(x))


class Ssd(nn.Module):
    """[N,3,512,512] RGB 0..255 -> boxes [N,5118,4] (ymin,xmin,ymax,xmax), scores [N,5118]."""

    STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)  # conv1 .. conv13

    def __init__(self, w):
        super().__init__()
        # the graph's constants: x / 127.5 - 1; ReLU6 = Clip(0, 6); box decoding /10, /5, /2
        self.div, self.one = w.scalar("div"), w.scalar("one")
        self.ten, self.five, self.two = w.scalar("ten"), w.scalar("five"), w.scalar("two")
        if (w.scalar("clip_min"), w.scalar("clip_max")) != (0.0, 6.0):
            raise ValueError("ssd: Clip is not ReLU6")
        self.conv0 = Conv(w, "conv0", stride=2)
        self.body = nn.ModuleList(Separable(w, f"conv{i + 1}", s) for i, s in enumerate(self.STRIDES))
        self.extra = nn.ModuleList(Conv(w, f"pred{i}", stride=2 if i % 2 else 1) for i in range(8))
        self.box = nn.ModuleList(Conv(w, f"box{i}_BoxEncodingPredictor") for i in range(6))
        self.cls = nn.ModuleList(Conv(w, f"box{i}_ClassPredictor") for i in range(6))
        self.register_buffer("anchor_centers", w.take("anchor_centers"))
        self.register_buffer("anchor_sizes", w.take("anchor_sizes"))

    def forward(self, x):
        x = F.relu6(self.conv0(x / self.div - self.one))
        maps = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in (10, 12):  # conv11 (32x32) and conv13 (16x16) feed predictors 0 and 1
                maps.append(x)
        for i, layer in enumerate(self.extra):
            x = F.relu6(layer(x))
            if i % 2:  # pred1, pred3, pred5, pred7: 8x8 .. 1x1
                maps.append(x)
        n = x.shape[0]
        enc = torch.cat([b(m).permute(0, 2, 3, 1).reshape(n, -1, 4) for b, m in zip(self.box, maps)], 1)
        cls = torch.cat([c(m).permute(0, 2, 3, 1).reshape(n, -1, 3) for c, m in zip(self.cls, maps)], 1)
        centre = enc[..., :2] / self.ten * self.anchor_sizes + self.anchor_centers
        half = torch.exp(enc[..., 2:] / self.five) * self.anchor_sizes / self.two
        return torch.cat([centre - half, centre + half], 2), torch.sigmoid(cls[..., 1])


# --- tiny_face_detector.onnx: tiny-YOLOv2 with separable convs (tiny_face_detector.md) ---------

class Tiny(nn.Module):
    """[N,3,416,416] RGB 0..255 -> raw [N,25,13,13]."""

    def __init__(self, w):
        super().__init__()
        self.norm = Normalise(w)
        self.conv0 = Conv(w, "conv0", same=False)
        self.layers = nn.ModuleList(Separable(w, f"conv{i}", act=leaky, dw_act=False) for i in range(1, 6))
        self.head = Conv(w, "conv8")

    def forward(self, x):
        x = max_pool_same(leaky(self.conv0(self.norm(x))), 2, 2)
        for i, layer in enumerate(self.layers):
            x = max_pool_same(layer(x), 2, 1 if i == 4 else 2)
        return (self.head(x),)


# --- face_landmark_68.onnx: 4 dense blocks + fc (face_landmark_68.md) -------------------------

class Dense(nn.Module):
    """out1 = relu(conv0(x)); out2..4 separable convs of relu of the running sums."""

    def __init__(self, w, name, first):
        super().__init__()
        if first:
            self.conv0 = Conv(w, f"{name}_conv0", stride=2)
        else:
            self.conv0 = Separable(w, f"{name}_conv0", stride=2, act=identity, dw_act=False)
        self.convs = nn.ModuleList(Separable(w, f"{name}_conv{i}", act=identity, dw_act=False) for i in (1, 2, 3))

    def forward(self, x):
        out1 = F.relu(self.conv0(x))
        out2 = self.convs[0](out1)
        out3 = self.convs[1](F.relu(out1 + out2))
        out4 = self.convs[2](F.relu(out1 + (out2 + out3)))
        return F.relu(out1 + (out2 + (out3 + out4)))


class Landmarks(nn.Module):
    """[N,3,112,112] RGB 0..255 -> landmarks [N,136] (x0,y0,..; relative to the 112 square)."""

    def __init__(self, w):
        super().__init__()
        self.norm = Normalise(w)
        self.blocks = nn.Sequential(*(Dense(w, f"dense{i}", i == 0) for i in range(4)))
        self.fc = nn.Linear(256, 136)
        with torch.no_grad():
            self.fc.weight.copy_(w.take("fc_w").T)
            self.fc.bias.copy_(w.take("fc_b"))

    def forward(self, x):
        return (self.fc(self.blocks(self.norm(x)).mean(dim=(2, 3))),)


# --- gallery search: no ONNX file; facerec's `search` (exact nearest of each query) -----------

class Search(nn.Module):
    """Exact nearest gallery row of each query by euclidean distance (face-api's comparison):
    [B,128] -> (row index [B], distance [B])."""

    def __init__(self, gallery):
        super().__init__()
        self.register_buffer("gallery", gallery)
        self.register_buffer("norms", (gallery * gallery).sum(1))

    def forward(self, q):
        d2 = torch.addmm(self.norms, q, self.gallery.T, alpha=-2.0)  # |g|^2 - 2 q.g, [B, rows]
        best, idx = d2.min(1)
        return idx, (best + (q * q).sum(1)).clamp_min(0).sqrt()


def descriptors():
    """The three real descriptors of models/parity (onnxruntime's), [3,128] float32."""
    return np.fromfile(os.path.join(PARITY, "descriptors.f32"), "<f4").reshape(3, 128)


def perturbed(rows, device, seed):
    """`rows` faces: the real descriptors cycled, each perturbed uniformly in +-0.1 per
    dimension (deterministic; the same kind of rows as facerec's `synthetic::perturbed_rows`)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    real = torch.from_numpy(descriptors()).to(device)
    noise = (torch.rand(rows, 128, generator=gen, device=device) - 0.5) * 0.2
    return real[torch.arange(rows, device=device) % len(real)] + noise


def gallery(rows, device):
    return perturbed(rows, device, seed=0)


# name -> (ONNX file, module class, input side, parity input PNGs)
SPECS = {
    "recognition": ("face_recognition.onnx", Recognition, 150, [f"recognition_input_{i}.png" for i in range(3)]),
    "ssd": ("ssd_mobilenetv1.onnx", Ssd, 512, ["ssd_input.png"]),
    "tiny": ("tiny_face_detector.onnx", Tiny, 416, ["tiny_input.png"]),
    "landmarks": ("face_landmark_68.onnx", Landmarks, 112, [f"landmark_input_{i}.png" for i in range(2)]),
    # Only for --check: dlib's own float weights in the same graph.
    "recognition_dlib": ("face_recognition_dlib.onnx", Recognition, 150, [f"recognition_input_{i}.png" for i in range(3)]),
}


def has_dlib():
    """face_recognition_dlib.onnx is optional: benches/gpu/pack.sh does not pack it."""
    present = os.path.exists(os.path.join(MODELS, SPECS["recognition_dlib"][0]))
    if not present:
        print("recognition_dlib: models/face_recognition_dlib.onnx absent, not checked")
    return present


def build(net):
    """The torch module of `net` with the ONNX file's weights; fails if a weight went unused."""
    file, cls, _, _ = SPECS[net]
    w = Weights(os.path.join(MODELS, file))
    module = cls(w).eval()
    if w.untaken():
        raise RuntimeError(f"{net}: initializers not used by the module: {w.untaken()}")
    return module


def square(img, side):
    """face-api's detector input: zero-pad at the bottom/right to a square, resize to `side`."""
    size = max(img.size)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(img, (0, 0))
    return canvas.resize((side, side), Image.BILINEAR)


def inputs(net):
    """Real inputs for `net`, float32 [n,3,S,S] 0..255: the parity PNGs, plus for the detectors
    the face-api package's demo photos when FACEAPI_DIR (the unpacked package) is set."""
    _, _, side, pngs = SPECS[net]
    imgs = [Image.open(os.path.join(PARITY, p)).convert("RGB") for p in pngs]
    faceapi = os.environ.get("FACEAPI_DIR")
    if faceapi and net in ("ssd", "tiny"):
        for path in sorted(glob.glob(os.path.join(faceapi, "demo", "*.jpg"))):
            imgs.append(square(Image.open(path).convert("RGB"), side))
    return np.stack([np.asarray(i, np.float32).transpose(2, 0, 1) for i in imgs])


def set_tf32(enabled):
    """fp32 convolutions and matmuls in IEEE fp32 (default) or TF32 (torch's conv default)."""
    precision = "tf32" if enabled else "ieee"
    try:
        torch.backends.cudnn.conv.fp32_precision = precision
        torch.backends.cuda.matmul.fp32_precision = precision
    except AttributeError:
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def run_ort(net, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(os.path.join(MODELS, SPECS[net][0]), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def run_torch(module, x, device, dtype=torch.float32):
    with torch.inference_mode():
        out = module(torch.from_numpy(x).to(device, dtype))
    return [o.float().cpu().numpy() for o in out]


def check(nets, device):
    """Max abs / relative difference of each module vs onnxruntime; returns the worst ratio
    to the tolerance (<= 1 passes)."""
    worst = 0.0
    for net in nets:
        x = inputs(net)
        ref = run_ort(net, x)
        got = run_torch(build(net).to(device), x, device)
        for r, g in zip(ref, got):
            if r.shape != g.shape:
                raise RuntimeError(f"{net}: shape {g.shape}, onnxruntime {r.shape}")
            diff = float(np.abs(r - g).max())
            scale = float(np.abs(r).max())
            rel = diff / max(scale, 1e-12)
            worst = max(worst, rel / RTOL_F32)
            print(f"check {net:<16} {str(r.shape):<16} max abs diff {diff:.3e}  output scale "
                  f"{scale:.3g}  relative {rel:.2e}  {'ok' if rel <= RTOL_F32 else 'FAIL'}")
    return worst


def timed(module, x, device, seconds, min_iters, max_iters):
    """Per-iteration seconds: (`x` still on the host: its copy to `device`), forward, outputs
    copied to the host, device synchronised; at least `min_iters`, then more until `seconds`
    have passed or `max_iters` are done."""
    cuda = device.type == "cuda"
    times = []
    start = time.perf_counter()
    while len(times) < min_iters or (time.perf_counter() - start < seconds and len(times) < max_iters):
        t = time.perf_counter()
        out = module(x.to(device))
        for o in out:
            o.cpu()  # read back, as facerec's bench does
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def write_json(args, device, results, accuracy):
    """The figures so far (rewritten after each one, so a run cut short keeps what it did)."""
    doc = {"tool": "pytorch-eager", "torch": torch.__version__, "device": device_name(device),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "settings": {"tf32": args.tf32, "cudnn_benchmark": not args.no_cudnn_benchmark,
                        "input_upload": args.upload,
                        "timed": ("input copied to the device + " if args.upload else "")
                        + "forward + outputs copied to the host",
                        "seconds": args.seconds, "gallery_faces": args.gallery_faces},
           "results": results}
    if args.fp16:
        doc["fp16_vs_fp32_rel_diff"] = accuracy
    with open(args.json + ".part", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(args.json + ".part", args.json)


def bench(args, device):
    """items/s per (net, batch) in fp32, or with --fp16 in half precision (module.half(), half
    inputs; then also the fp16 outputs' relative difference from fp32 on the real inputs)."""
    results, accuracy = [], {}
    dtype = torch.float16 if args.fp16 else torch.float32
    for net in args.nets:
        if net == "search":
            if args.fp16:
                print("search: fp32 only, skipped", flush=True)
                continue
            real = perturbed(max(args.batches), torch.device("cpu"), seed=1).numpy()
            module = Search(gallery(args.gallery_faces, device))
        else:
            real, module = inputs(net), build(net).to(device)
        if args.fp16:
            ref = run_torch(module, real, device)
            module = module.half()
            got = run_torch(module, real, device, dtype)
            accuracy[net] = max(float(np.abs(r - g).max() / max(np.abs(r).max(), 1e-12))
                                for r, g in zip(ref, got))
            print(f"fp16 {net}: max |fp16 - fp32| / max |fp32| = {accuracy[net]:.2e}", flush=True)
        for batch in args.batches:
            x = torch.from_numpy(real[np.arange(batch) % len(real)]).to(dtype=dtype)
            if not args.upload:
                x = x.to(device)
            with torch.inference_mode():
                timed(module, x, device, 0.0, args.warmup, args.warmup)  # cudnn autotunes here
                times = timed(module, x, device, args.seconds, 3, args.max_iters)
            med = statistics.median(times)
            row = {"net": net, "dtype": "f16" if args.fp16 else "f32", "batch": batch,
                   "items_per_s": batch / med, "median_ms": med * 1e3, "iters": len(times)}
            results.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                write_json(args, device, results, accuracy)
            del x
        del module
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results, accuracy


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with onnxruntime, exit 1 over tolerance")
    ap.add_argument("--bench", action="store_true", help="measure items/s")
    ap.add_argument("--nets", default=",".join(BENCH_NETS),
                    help=f"comma list (default {','.join(BENCH_NETS)}; --check skips search)")
    ap.add_argument("--gallery-faces", type=int, default=1_000_000, help="rows searched by `search`")
    ap.add_argument("--batches", default="1,16,64,256", help="comma list of batch sizes")
    ap.add_argument("--fp16", action="store_true", help="bench module.half() with half inputs, not fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per net/dtype/batch")
    ap.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    ap.add_argument("--max-iters", type=int, default=200, help="timed iterations at most")
    ap.add_argument("--upload", action="store_true",
                    help="time the input's copy host -> device too (default: input already there)")
    ap.add_argument("--tf32", action="store_true", help="let fp32 convs/matmuls use TF32 (off: IEEE fp32)")
    ap.add_argument("--no-cudnn-benchmark", action="store_true", help="skip cudnn's algorithm search")
    ap.add_argument("--json", help="write the bench figures here")
    args = ap.parse_args(argv)
    args.nets = [n for n in args.nets.split(",") if n]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    if not (args.check or args.bench):
        ap.error("give --check and/or --bench")
    unknown = [n for n in args.nets if n not in SPECS and n != "search"]
    if unknown:
        ap.error(f"unknown nets {unknown}; known: {list(SPECS) + ['search']}")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    set_tf32(args.tf32)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    print(f"torch {torch.__version__} on {device_name(device)}", flush=True)
    status = 0
    if args.check:
        nets = [n for n in args.nets if n in SPECS]
        worst = check(nets + (["recognition_dlib"] if "recognition" in nets and has_dlib() else []), device)
        print(f"check: worst difference {worst:.2e} of the tolerance (relative {RTOL_F32:g})")
        status = 0 if worst <= 1.0 else 1
    if args.bench:
        bench(args, device)
    return status


if __name__ == "__main__":
    sys.exit(main())
