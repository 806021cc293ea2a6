//! Detector post-processing: decoding the raw network outputs into boxes and greedy
//! non-maximum suppression, for both detectors (SSD MobileNetV1 and Tiny Face Detector).

/// A face box in pixels of the original (upright) image.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    /// Detector confidence, 0..1.
    pub score: f32,
}

impl FaceBox {
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    /// The face's size for matching decisions: the shorter side of the box, in source
    /// pixels (`threshold::Threshold`).
    pub fn side(&self) -> f32 {
        self.w.min(self.h).max(0.0)
    }

    fn contains_centre_of(&self, other: &FaceBox) -> bool {
        let (cx, cy) = (other.x + other.w / 2.0, other.y + other.h / 2.0);
        (self.x..=self.x + self.w).contains(&cx) && (self.y..=self.y + self.h).contains(&cy)
    }

    pub fn iou(&self, other: &FaceBox) -> f32 {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (self.x + self.w).min(other.x + other.w);
        let y1 = (self.y + self.h).min(other.y + other.h);
        let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// Clips the box to a `w` x `h` image; `None` when nothing is left.
    pub fn clip(&self, w: u32, h: u32) -> Option<FaceBox> {
        let x0 = self.x.max(0.0);
        let y0 = self.y.max(0.0);
        let x1 = (self.x + self.w).min(w as f32);
        let y1 = (self.y + self.h).min(h as f32);
        (x1 - x0 >= 1.0 && y1 - y0 >= 1.0).then_some(FaceBox {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
            score: self.score,
        })
    }
}

/// Greedy NMS: keeps boxes by descending score, dropping any whose IoU with a kept box
/// exceeds `iou_threshold`; at most `max_results` are kept.
pub fn nms(mut boxes: Vec<FaceBox>, iou_threshold: f32, max_results: usize) -> Vec<FaceBox> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<FaceBox> = Vec::new();
    for candidate in boxes {
        if kept.len() >= max_results {
            break;
        }
        if kept.iter().all(|k| k.iou(&candidate) <= iou_threshold) {
            kept.push(candidate);
        }
    }
    kept
}

/// Adds to `kept` (one detector's faces) each box of `extra` (another detector's) that is
/// a face `kept` does not have: overlapping no kept box by more than 0.1 IoU, and neither
/// box holding the other's centre. The two detectors frame a face differently (SSD's box
/// is taller than Tiny's), so a plain IoU test would count some faces twice.
pub fn add_unseen(kept: &mut Vec<FaceBox>, extra: Vec<FaceBox>) {
    for b in extra {
        let seen = kept
            .iter()
            .any(|k| k.iou(&b) > 0.1 || k.contains_centre_of(&b) || b.contains_centre_of(k));
        if !seen {
            kept.push(b);
        }
    }
}

/// Thresholds shared by both detectors.
#[derive(Debug, Clone, Copy)]
pub struct DetectParams {
    pub min_score: f32,
    pub iou_threshold: f32,
    pub max_results: usize,
}

/// Decodes SSD outputs for one image. `boxes` holds `[ymin, xmin, ymax, xmax]` per anchor,
/// normalised to the square network input; `scores` the face probability per anchor.
/// `input_scale` maps original pixels to network pixels (see `prep::letterbox`), and
/// `input_size` is the network's side.
pub fn decode_ssd(
    boxes: &[f32],
    scores: &[f32],
    input_size: u32,
    input_scale: f32,
    params: &DetectParams,
) -> Vec<FaceBox> {
    let to_px = input_size as f32 / input_scale;
    let candidates = scores
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s > params.min_score)
        .map(|(i, &score)| {
            let b = &boxes[i * 4..i * 4 + 4];
            let (y0, x0, y1, x1) = (b[0], b[1], b[2], b[3]);
            FaceBox {
                x: x0.min(x1) * to_px,
                y: y0.min(y1) * to_px,
                w: (x1 - x0).abs() * to_px,
                h: (y1 - y0).abs() * to_px,
                score,
            }
        })
        .collect();
    nms(candidates, params.iou_threshold, params.max_results)
}

/// Tiny Face Detector anchors (face-api `tinyFaceDetector/const.ts`), in grid cells.
const TINY_ANCHORS: [(f32, f32); 5] = [
    (1.603231, 2.094468),
    (6.041143, 7.080126),
    (2.882459, 3.518061),
    (4.266906, 5.178857),
    (9.041765, 10.66308),
];

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Decodes the Tiny Face Detector's raw `[25, rows, cols]` output for one image, `grid`
/// = `(cols, rows)` cells of 32 input pixels (channel `a*5 + k` is anchor `a`, field `k`
/// of `tx, ty, tw, th, score`). `input_scale` maps original pixels to input pixels.
pub fn decode_tiny(
    raw: &[f32],
    grid: (usize, usize),
    input_scale: f32,
    params: &DetectParams,
) -> Vec<FaceBox> {
    let (cols, rows) = grid;
    let plane = cols * rows;
    // One cell is 32 input pixels.
    let to_px = 32.0 / input_scale;
    let mut candidates = Vec::new();
    for (a, &(aw, ah)) in TINY_ANCHORS.iter().enumerate() {
        let at = |k: usize, r: usize, c: usize| raw[(a * 5 + k) * plane + r * cols + c];
        for r in 0..rows {
            for c in 0..cols {
                let score = sigmoid(at(4, r, c));
                if score <= params.min_score {
                    continue;
                }
                let cx = c as f32 + sigmoid(at(0, r, c));
                let cy = r as f32 + sigmoid(at(1, r, c));
                let w = at(2, r, c).exp() * aw;
                let h = at(3, r, c).exp() * ah;
                candidates.push(FaceBox {
                    x: (cx - w / 2.0) * to_px,
                    y: (cy - h / 2.0) * to_px,
                    w: w * to_px,
                    h: h * to_px,
                    score,
                });
            }
        }
    }
    nms(candidates, params.iou_threshold, params.max_results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(x: f32, y: f32, w: f32, h: f32, score: f32) -> FaceBox {
        FaceBox { x, y, w, h, score }
    }

    #[test]
    fn nms_drops_overlaps_and_keeps_order() {
        let kept = nms(
            vec![
                fb(0.0, 0.0, 10.0, 10.0, 0.6),
                fb(1.0, 1.0, 10.0, 10.0, 0.9),
                fb(50.0, 50.0, 10.0, 10.0, 0.7),
            ],
            0.5,
            10,
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.7);
    }

    #[test]
    fn nms_respects_max_results() {
        let boxes = (0..10)
            .map(|i| fb(i as f32 * 20.0, 0.0, 10.0, 10.0, 0.5))
            .collect();
        assert_eq!(nms(boxes, 0.5, 3).len(), 3);
    }

    #[test]
    fn ssd_boxes_scale_back_to_original_pixels() {
        // A 1024x512 image letterboxed to 512: scale 0.5.
        let boxes = [0.25, 0.5, 0.5, 0.75];
        let params = DetectParams {
            min_score: 0.5,
            iou_threshold: 0.5,
            max_results: 10,
        };
        let faces = decode_ssd(&boxes, &[0.9], 512, 0.5, &params);
        assert_eq!(faces, vec![fb(512.0, 256.0, 256.0, 256.0, 0.9)]);
        assert!(decode_ssd(&boxes, &[0.4], 512, 0.5, &params).is_empty());
    }

    #[test]
    fn tiny_cells_on_a_wide_grid_map_to_their_pixels() {
        // A 4-row, 6-column grid (a 192x128 input), the image at scale 0.5: anchor 0 sure of
        // a face in row 2, column 5, centred in the cell, at the anchor's own size.
        let (cols, rows) = (6, 4);
        let plane = cols * rows;
        let mut raw = vec![-20.0f32; 25 * plane];
        for k in 0..4 {
            raw[k * plane + 2 * cols + 5] = 0.0;
        }
        raw[4 * plane + 2 * cols + 5] = 5.0;
        let params = DetectParams {
            min_score: 0.5,
            iou_threshold: 0.4,
            max_results: 10,
        };
        let faces = decode_tiny(&raw, (cols, rows), 0.5, &params);
        assert_eq!(faces.len(), 1);
        let f = faces[0];
        let (aw, ah) = TINY_ANCHORS[0];
        let (cx, cy) = (f.x + f.w / 2.0, f.y + f.h / 2.0);
        assert!(
            (cx - 5.5 * 64.0).abs() < 1e-3 && (cy - 2.5 * 64.0).abs() < 1e-3,
            "{f:?}"
        );
        assert!(
            (f.w - aw * 64.0).abs() < 1e-3 && (f.h - ah * 64.0).abs() < 1e-3,
            "{f:?}"
        );
    }

    #[test]
    fn add_unseen_keeps_new_faces_only() {
        let mut kept = vec![fb(100.0, 100.0, 50.0, 70.0, 0.9)];
        add_unseen(
            &mut kept,
            vec![
                // The same face framed shorter: its centre is inside the kept box.
                fb(102.0, 115.0, 46.0, 46.0, 0.8),
                // A large box around the kept face: holds its centre.
                fb(60.0, 60.0, 140.0, 160.0, 0.7),
                // A face elsewhere.
                fb(300.0, 100.0, 50.0, 50.0, 0.6),
            ],
        );
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1], fb(300.0, 100.0, 50.0, 50.0, 0.6));
    }

    #[test]
    fn side_is_the_shorter_side() {
        assert_eq!(fb(0.0, 0.0, 40.0, 70.0, 1.0).side(), 40.0);
    }

    #[test]
    fn clip_keeps_inside_part() {
        let b = fb(-5.0, 10.0, 20.0, 100.0, 1.0)
            .clip(50, 50)
            .expect("overlaps");
        assert_eq!(b, fb(0.0, 10.0, 15.0, 40.0, 1.0));
        assert!(fb(60.0, 0.0, 5.0, 5.0, 1.0).clip(50, 50).is_none());
    }
}
