"""Reference (numpy) re-implementation of face-api's pre- and post-processing around the four
ONNX graphs, transcribed from @vladmandic/face-api 1.7.15 package/src (tensor input path, i.e.
what face-api does when it is handed a decoded image tensor, as in Node). This is the executable
form of what the model cards document; the Rust side should match it.

Image arrays are HxWx3 (RGB); network inputs are float32 NCHW with raw 0..255 values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------------------------
# Pre-processing: NetInput.toBatchTensor (dom/NetInput.ts) for tensor inputs
# ---------------------------------------------------------------------------------------------


def js_round(x: float) -> int:
    """JavaScript Math.round (halves go towards +infinity)."""
    return int(math.floor(x + 0.5))


def pad_to_square(img: np.ndarray, center: bool) -> np.ndarray:
    """ops/padToSquare.ts: zero-pad the shorter side so that H == W.

    center=False: all padding after the image (bottom or right).
    center=True : round(diff/2) (JS Math.round) zero rows/cols *after* the image and the rest
                  (diff - round(diff/2)) *before* it; for odd diff the extra one goes after.
    """
    h, w = img.shape[:2]
    if h == w:
        return img.astype(np.float32)
    diff = abs(h - w)
    after = js_round(diff * (0.5 if center else 1.0))
    before = diff - after if center else 0
    if h > w:
        pads = ((0, 0), (before, after), (0, 0))
    else:
        pads = ((before, after), (0, 0), (0, 0))
    return np.pad(img.astype(np.float32), pads, mode="constant")


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """tf.image.resizeBilinear(x, [out_h, out_w], alignCorners=false, halfPixelCenters=false)
    exactly as the tfjs CPU kernel does it (legacy TF1 sampling: src = dst * in/out, no
    half-pixel offset, no anti-aliasing; computed in double, stored as float32)."""
    in_h, in_w = img.shape[:2]
    x = img.astype(np.float64)
    ry, rx = in_h / out_h, in_w / out_w
    fy = ry * np.arange(out_h, dtype=np.float64)
    fx = rx * np.arange(out_w, dtype=np.float64)
    y0 = np.maximum(0, np.floor(fy)).astype(np.int64)
    x0 = np.maximum(0, np.floor(fx)).astype(np.int64)
    y1 = np.minimum(in_h - 1, np.ceil(fy)).astype(np.int64)
    x1 = np.minimum(in_w - 1, np.ceil(fx)).astype(np.int64)
    dy = (fy - y0)[:, None, None]
    dx = (fx - x0)[None, :, None]
    tl, tr = x[y0][:, x0], x[y0][:, x1]
    bl, br = x[y1][:, x0], x[y1][:, x1]
    top = tl + (tr - tl) * dx
    bottom = bl + (br - bl) * dx
    return (top + (bottom - top) * dy).astype(np.float32)


def net_input(img: np.ndarray, size: int, center: bool) -> np.ndarray:
    """toBatchTensor(size, center) for one HxWx3 image -> float32 size x size x 3 (0..255)."""
    sq = pad_to_square(img, center)
    if sq.shape[0] != size or sq.shape[1] != size:
        sq = resize_bilinear(sq, size, size)
    return sq.astype(np.float32)


def to_nchw(*imgs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([np.asarray(i, np.float32).transpose(2, 0, 1) for i in imgs]))


def reshaped_dims(w: int, h: int, size: int) -> tuple[int, int]:
    """utils.computeReshapedDimensions: size of the image inside the padded square, rounded."""
    scale = size / max(w, h)
    return js_round(w * scale), js_round(h * scale)


# ---------------------------------------------------------------------------------------------
# Boxes
# ---------------------------------------------------------------------------------------------


@dataclass
class Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    def clip_at_image_borders(self, img_w: int, img_h: int) -> "Box":
        """classes/Box.ts clipAtImageBorders (ends with floor())."""
        cx, cy = max(self.x, 0), max(self.y, 0)
        cw = min(self.right - cx, img_w - cx)
        ch = min(self.bottom - cy, img_h - cy)
        return Box(math.floor(cx), math.floor(cy), math.floor(cw), math.floor(ch))


def extract_face(img: np.ndarray, box: Box) -> np.ndarray:
    """dom/extractFaceTensors.ts: clip at image borders (floored), then slice."""
    b = box.clip_at_image_borders(img.shape[1], img.shape[0])
    if b.width <= 0 or b.height <= 0:
        raise ValueError(f"empty face box {box}")
    return img[b.y:b.y + b.height, b.x:b.x + b.width]


# ---------------------------------------------------------------------------------------------
# SSD MobileNetV1 post-processing (ssdMobilenetv1/SsdMobilenetv1.ts, nonMaxSuppression.ts)
# ---------------------------------------------------------------------------------------------
SSD_INPUT_SIZE = 512
SSD_IOU_THRESHOLD = 0.5
SSD_MAX_RESULTS = 100
SSD_MIN_CONFIDENCE = 0.5


def _ssd_iou(b: np.ndarray, i: int, j: int) -> float:
    yi0, xi0 = min(b[i, 0], b[i, 2]), min(b[i, 1], b[i, 3])
    yi1, xi1 = max(b[i, 0], b[i, 2]), max(b[i, 1], b[i, 3])
    yj0, xj0 = min(b[j, 0], b[j, 2]), min(b[j, 1], b[j, 3])
    yj1, xj1 = max(b[j, 0], b[j, 2]), max(b[j, 1], b[j, 3])
    area_i = (yi1 - yi0) * (xi1 - xi0)
    area_j = (yj1 - yj0) * (xj1 - xj0)
    if area_i <= 0 or area_j <= 0:
        return 0.0
    inter = max(min(yi1, yj1) - max(yi0, yj0), 0.0) * max(min(xi1, xj1) - max(xi0, xj0), 0.0)
    return float(inter / (area_i + area_j - inter))


def ssd_nms(boxes: np.ndarray, scores: np.ndarray, max_results=SSD_MAX_RESULTS,
            iou_threshold=SSD_IOU_THRESHOLD, min_confidence=SSD_MIN_CONFIDENCE) -> list[int]:
    """ssdMobilenetv1/nonMaxSuppression.ts (greedy, candidates with score > min_confidence,
    sorted by score descending; a candidate is dropped if IoU > iou_threshold with any kept box)."""
    b = boxes.astype(np.float64)
    s = scores.astype(np.float64)
    cand = [i for i in range(len(s)) if s[i] > min_confidence]
    cand.sort(key=lambda i: -s[i])  # JS sort is stable, so ties keep index order
    out_size = min(max_results, len(s))
    selected: list[int] = []
    for i in cand:
        if len(selected) >= out_size:
            break
        score = s[i]
        for j in reversed(selected):
            iou = _ssd_iou(b, i, j)
            if iou == 0.0:
                continue
            score *= 1.0 if iou <= iou_threshold else 0.0
            if score <= min_confidence:
                break
        if score == s[i]:
            selected.append(i)
    return selected


@dataclass
class Detection:
    score: float
    rel: Box  # relative to the original image (0..1)
    img_w: int
    img_h: int

    @property
    def box(self) -> Box:
        """ObjectDetection.box: the relative box scaled to image pixels (not rounded)."""
        return Box(self.rel.x * self.img_w, self.rel.y * self.img_h,
                   self.rel.width * self.img_w, self.rel.height * self.img_h)


def ssd_locate_faces(boxes: np.ndarray, scores: np.ndarray, img_w: int, img_h: int,
                     min_confidence=SSD_MIN_CONFIDENCE, max_results=SSD_MAX_RESULTS) -> list[Detection]:
    """SsdMobilenetv1.locateFaces for one image: boxes [5118,4] (ymin,xmin,ymax,xmax relative to
    the 512 input), scores [5118]. Coordinates are clipped to 0..1 of the padded square and then
    rescaled by size/reshaped so that they become relative to the original image."""
    idx = ssd_nms(boxes, scores, max_results, SSD_IOU_THRESHOLD, min_confidence)
    rw, rh = reshaped_dims(img_w, img_h, SSD_INPUT_SIZE)
    pad_x, pad_y = SSD_INPUT_SIZE / rw, SSD_INPUT_SIZE / rh
    out = []
    for i in idx:
        b = boxes[i].astype(np.float64)
        top, bottom = max(0.0, b[0]) * pad_y, min(1.0, b[2]) * pad_y
        left, right = max(0.0, b[1]) * pad_x, min(1.0, b[3]) * pad_x
        out.append(Detection(float(scores[i]), Box(left, top, right - left, bottom - top), img_w, img_h))
    return out


# ---------------------------------------------------------------------------------------------
# Tiny face detector post-processing (tinyYolov2/TinyYolov2Base.ts extractBoxes, ops/nms)
# ---------------------------------------------------------------------------------------------
TINY_ANCHORS = [(1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061),
                (4.266906, 5.178857), (9.041765, 10.66308)]
TINY_IOU_THRESHOLD = 0.4
TINY_SCORE_THRESHOLD = 0.5
TINY_INPUT_SIZE = 416


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def tiny_decode(raw: np.ndarray, img_w: int, img_h: int, input_size=TINY_INPUT_SIZE,
                score_threshold=TINY_SCORE_THRESHOLD) -> list[Detection]:
    """raw: [25, G, G] for one image (channel = anchor*5 + {tx,ty,tw,th,score})."""
    g = raw.shape[1]
    rw, rh = reshaped_dims(img_w, img_h, input_size)
    size = max(rw, rh)
    cfx, cfy = size / rw, size / rh
    r = raw.astype(np.float64).reshape(5, 5, g, g)  # [anchor, field, row, col]
    cands = []
    for row in range(g):
        for col in range(g):
            for a, (aw, ah) in enumerate(TINY_ANCHORS):
                score = _sigmoid(r[a, 4, row, col])
                if score > score_threshold:
                    ctx = (col + _sigmoid(r[a, 0, row, col])) / g * cfx
                    cty = (row + _sigmoid(r[a, 1, row, col])) / g * cfy
                    bw = math.exp(r[a, 2, row, col]) * aw / g * cfx
                    bh = math.exp(r[a, 3, row, col]) * ah / g * cfy
                    cands.append((score, Box(ctx - bw / 2, cty - bh / 2, bw, bh)))
    keep = tiny_nms([c[1] for c in cands], [c[0] for c in cands], input_size)
    return [Detection(cands[i][0], cands[i][1], img_w, img_h) for i in keep]


def tiny_nms(boxes: list[Box], scores: list[float], input_size=TINY_INPUT_SIZE,
             iou_threshold=TINY_IOU_THRESHOLD) -> list[int]:
    """ops/nonMaxSuppression.ts (IoU on boxes rescaled by input_size; no result cap)."""
    def iou(a: Box, b: Box) -> float:
        a = Box(a.x * input_size, a.y * input_size, a.width * input_size, a.height * input_size)
        b = Box(b.x * input_size, b.y * input_size, b.width * input_size, b.height * input_size)
        w = max(0.0, min(a.right, b.right) - max(a.x, b.x))
        h = max(0.0, min(a.bottom, b.bottom) - max(a.y, b.y))
        inter = w * h
        return inter / (a.width * a.height + b.width * b.height - inter)

    order = sorted(range(len(scores)), key=lambda i: scores[i])  # ascending, pop from the end
    pick = []
    while order:
        cur = order.pop()
        pick.append(cur)
        order = [i for i in order if iou(boxes[cur], boxes[i]) <= iou_threshold]
    return pick


# ---------------------------------------------------------------------------------------------
# Landmarks (faceLandmarkNet/FaceLandmark68NetBase.ts postProcess, classes/FaceLandmarks.ts)
# ---------------------------------------------------------------------------------------------
LANDMARK_INPUT_SIZE = 112


def landmarks_relative(raw: np.ndarray, crop_w: int, crop_h: int, size=LANDMARK_INPUT_SIZE) -> np.ndarray:
    """postProcess: raw [136] (x,y relative to the padded size x size square) -> [68,2] relative
    to the un-padded face crop: (raw*size - pad) / scaled_dim, pad = |w-h|/2 on the short side."""
    scale = size / max(crop_w, crop_h)
    w, h = crop_w * scale, crop_h * scale
    pad_x = abs(w - h) / 2 if w < h else 0.0
    pad_y = abs(w - h) / 2 if h < w else 0.0
    pts = raw.astype(np.float64).reshape(68, 2) * size
    return np.stack([(pts[:, 0] - pad_x) / w, (pts[:, 1] - pad_y) / h], axis=1)


def landmarks_absolute(rel: np.ndarray, crop_w: int, crop_h: int, det_box: Box) -> np.ndarray:
    """FaceLandmarks68 positions shifted into image pixels (extendWithFaceLandmarks: shift by the
    *unfloored* detection box origin, while the crop itself came from the floored box)."""
    return rel * np.array([crop_w, crop_h]) + np.array([det_box.x, det_box.y])


def align_dlib(pts: np.ndarray, crop_w: int, crop_h: int) -> Box:
    """classes/FaceLandmarks.ts alignDlib (used by withFaceDescriptors): square box from the eye
    and mouth centres. relX=0.5, relY=0.43, relScale=0.45. (crop_w/crop_h = the landmark's
    imageWidth/imageHeight, i.e. the face-crop size, as in face-api.)"""
    left_eye = pts[36:42].mean(axis=0)
    right_eye = pts[42:48].mean(axis=0)
    mouth = pts[48:68].mean(axis=0)
    d = (np.linalg.norm(mouth - left_eye) + np.linalg.norm(mouth - right_eye)) / 2
    size = math.floor(d / 0.45)
    ref = (left_eye + right_eye + mouth) / 3
    x = math.floor(max(0.0, ref[0] - 0.5 * size))
    y = math.floor(max(0.0, ref[1] - 0.43 * size))
    return Box(x, y, min(size, crop_w + x), min(size, crop_h + y))
