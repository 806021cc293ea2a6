//! Face alignment: a least-squares similarity transform from the 68 detected landmarks to
//! dlib's mean face shape, producing the canonical 150x150 chip (padding 0.25) that the
//! recognition ResNet — a port of dlib's `dlib_face_recognition_resnet_model_v1` — was
//! trained on. Unaligned crops separate people poorly.

use image::RgbImage;

use crate::prep::{Affine, warp};

/// Side of the recognition chip, in pixels.
pub const CHIP_SIZE: u32 = 150;
/// dlib's `get_face_chip_details(shape, 150, 0.25)` padding.
pub const CHIP_PADDING: f32 = 0.25;

/// dlib's mean face shape for landmarks 17..=67 (the jaw line is not used), in a unit box
/// (`dlib/image_transforms/interpolation.h`, `get_face_chip_details`).
const MEAN_FACE_X: [f32; 51] = [
    0.000213256,
    0.0752622,
    0.18113,
    0.29077,
    0.393397,
    0.586856,
    0.689483,
    0.799124,
    0.904991,
    0.98004,
    0.490127,
    0.490127,
    0.490127,
    0.490127,
    0.36688,
    0.426036,
    0.490127,
    0.554217,
    0.613373,
    0.121737,
    0.187122,
    0.265825,
    0.334606,
    0.260918,
    0.182743,
    0.645647,
    0.714428,
    0.793132,
    0.858516,
    0.79751,
    0.719335,
    0.254149,
    0.340985,
    0.428858,
    0.490127,
    0.551395,
    0.639268,
    0.726104,
    0.642159,
    0.556721,
    0.490127,
    0.423532,
    0.338094,
    0.290379,
    0.428096,
    0.490127,
    0.552157,
    0.689874,
    0.553364,
    0.490127,
    0.42689,
];
const MEAN_FACE_Y: [f32; 51] = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345,
    0.587326, 0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852,
    0.178758, 0.216423, 0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388,
    0.745405, 0.780233, 0.864805, 0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746,
    0.785343, 0.778746, 0.784792, 0.824182, 0.831803, 0.824182,
];

/// 68 landmark points in image pixels.
pub type Landmarks = [(f32, f32); 68];

/// Where landmark `17 + i` sits in the chip, in chip pixels.
fn template_point(i: usize) -> (f32, f32) {
    let s = CHIP_SIZE as f32 / (2.0 * CHIP_PADDING + 1.0);
    (
        (MEAN_FACE_X[i] + CHIP_PADDING) * s,
        (MEAN_FACE_Y[i] + CHIP_PADDING) * s,
    )
}

/// Least-squares similarity transform (rotation, uniform scale, translation; no
/// reflection) taking `from[i]` to `to[i]` (Umeyama's solution in 2-D closed form).
pub fn similarity(from: &[(f32, f32)], to: &[(f32, f32)]) -> Affine {
    debug_assert_eq!(from.len(), to.len());
    let n = from.len() as f64;
    let mean = |pts: &[(f32, f32)]| {
        let (sx, sy) = pts.iter().fold((0f64, 0f64), |(ax, ay), &(x, y)| {
            (ax + x as f64, ay + y as f64)
        });
        (sx / n, sy / n)
    };
    let (fx, fy) = mean(from);
    let (tx, ty) = mean(to);
    let (mut dot, mut cross, mut norm) = (0f64, 0f64, 0f64);
    for (&(x0, y0), &(x1, y1)) in from.iter().zip(to) {
        let (ax, ay) = (x0 as f64 - fx, y0 as f64 - fy);
        let (bx, by) = (x1 as f64 - tx, y1 as f64 - ty);
        dot += ax * bx + ay * by;
        cross += ax * by - ay * bx;
        norm += ax * ax + ay * ay;
    }
    if norm <= f64::EPSILON {
        return Affine::scale_translate(1.0, (tx - fx) as f32, (ty - fy) as f32);
    }
    let (a, b) = (dot / norm, cross / norm);
    Affine {
        a: a as f32,
        b: -b as f32,
        c: b as f32,
        d: a as f32,
        tx: (tx - (a * fx - b * fy)) as f32,
        ty: (ty - (b * fx + a * fy)) as f32,
    }
}

/// The map from chip pixels to image pixels for a face with these landmarks.
pub fn chip_to_image(landmarks: &Landmarks) -> Affine {
    let template: Vec<(f32, f32)> = (0..51).map(template_point).collect();
    // Fit template -> image directly, so sampling needs no inverse.
    similarity(&template, &landmarks[17..])
}

/// Extracts the aligned `CHIP_SIZE` x `CHIP_SIZE` face chip.
pub fn chip(img: &RgbImage, landmarks: &Landmarks) -> RgbImage {
    warp(img, &chip_to_image(landmarks), CHIP_SIZE, CHIP_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        let truth = Affine {
            a: 1.5 * 0.3f32.cos(),
            b: -1.5 * 0.3f32.sin(),
            c: 1.5 * 0.3f32.sin(),
            d: 1.5 * 0.3f32.cos(),
            tx: 12.0,
            ty: -7.0,
        };
        let from: Vec<(f32, f32)> = (0..51).map(template_point).collect();
        let to: Vec<(f32, f32)> = from.iter().map(|&(x, y)| truth.apply(x, y)).collect();
        let fit = similarity(&from, &to);
        for (got, want) in [
            (fit.a, truth.a),
            (fit.b, truth.b),
            (fit.c, truth.c),
            (fit.d, truth.d),
            (fit.tx, truth.tx),
            (fit.ty, truth.ty),
        ] {
            assert!((got - want).abs() < 1e-3, "{fit:?} vs {truth:?}");
        }
    }

    #[test]
    fn template_face_maps_to_itself() {
        let mut lm = [(0f32, 0f32); 68];
        for i in 0..51 {
            lm[17 + i] = template_point(i);
        }
        let map = chip_to_image(&lm);
        let (x, y) = map.apply(40.0, 90.0);
        assert!((x - 40.0).abs() < 1e-3 && (y - 90.0).abs() < 1e-3);
    }
}
