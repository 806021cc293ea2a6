//! A face's quality figures (`FaceQuality`): pose from its 68 landmarks, sharpness from
//! the image under its box.

use facerec_contract::report::FaceQuality;
use image::RgbImage;

use crate::align::Landmarks;
use crate::detect::FaceBox;

/// Side of the grid the box is sampled on for sharpness.
const GRID: usize = 64;

/// The quality of a face with `landmarks` and box `bbox` in `img` (upright pixels).
pub fn measure(img: &RgbImage, bbox: &FaceBox, landmarks: &Landmarks) -> FaceQuality {
    let (yaw, roll) = pose(landmarks);
    FaceQuality {
        yaw,
        roll,
        sharpness: sharpness(img, bbox),
    }
}

/// (yaw, roll) from the landmarks of the iBUG 68-point scheme: the nose tip (30) against
/// the jaw's ends (0, 16); the eye centres (36-41, 42-47).
pub fn pose(lm: &Landmarks) -> (f32, f32) {
    let d = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let (left, right) = (d(lm[30], lm[0]), d(lm[30], lm[16]));
    let yaw = if left + right > 0.0 {
        (left - right) / (left + right)
    } else {
        0.0
    };
    let centre = |r: std::ops::Range<usize>| {
        let n = r.len() as f32;
        let (x, y) = lm[r]
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
        (x / n, y / n)
    };
    let (a, b) = (centre(36..42), centre(42..48));
    let roll = (b.1 - a.1).atan2(b.0 - a.0).to_degrees();
    (yaw, roll)
}

/// The variance of the 4-neighbour Laplacian of the luma under `bbox`, sampled on a
/// `GRID` x `GRID` grid (nearest pixel); 0 for a box outside the image.
pub fn sharpness(img: &RgbImage, bbox: &FaceBox) -> f32 {
    let (w, h) = (img.width() as f32, img.height() as f32);
    if bbox.w <= 0.0 || bbox.h <= 0.0 || w < 1.0 || h < 1.0 {
        return 0.0;
    }
    let mut luma = vec![0f32; GRID * GRID];
    for gy in 0..GRID {
        let y = (bbox.y + (gy as f32 + 0.5) * bbox.h / GRID as f32).clamp(0.0, h - 1.0);
        for gx in 0..GRID {
            let x = (bbox.x + (gx as f32 + 0.5) * bbox.w / GRID as f32).clamp(0.0, w - 1.0);
            let p = img.get_pixel(x as u32, y as u32).0;
            luma[gy * GRID + gx] =
                0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
        }
    }
    let mut values = Vec::with_capacity((GRID - 2) * (GRID - 2));
    for y in 1..GRID - 1 {
        for x in 1..GRID - 1 {
            let c = luma[y * GRID + x];
            values.push(
                luma[(y - 1) * GRID + x]
                    + luma[(y + 1) * GRID + x]
                    + luma[y * GRID + x - 1]
                    + luma[y * GRID + x + 1]
                    - 4.0 * c,
            );
        }
    }
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face_box() -> FaceBox {
        FaceBox {
            x: 8.0,
            y: 8.0,
            w: 48.0,
            h: 48.0,
            score: 1.0,
        }
    }

    #[test]
    fn a_flat_image_has_no_sharpness_and_a_checkerboard_much() {
        let flat = RgbImage::from_pixel(64, 64, image::Rgb([120, 120, 120]));
        assert_eq!(sharpness(&flat, &face_box()), 0.0);
        let board = RgbImage::from_fn(64, 64, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 0 } else { 255 };
            image::Rgb([v, v, v])
        });
        assert!(sharpness(&board, &face_box()) > 1000.0);
        // A blur (the board averaged over 4x4 blocks) is less sharp.
        let blurred = RgbImage::from_fn(64, 64, |x, y| {
            let v = ((x / 4 + y / 4) % 2 * 255) as u8 / 2 + 64;
            image::Rgb([v, v, v])
        });
        assert!(sharpness(&blurred, &face_box()) < sharpness(&board, &face_box()));
    }

    #[test]
    fn a_symmetric_level_face_has_no_yaw_or_roll() {
        let mut lm: Landmarks = [(0.0, 0.0); 68];
        for (i, p) in lm.iter_mut().enumerate().take(17) {
            // The jaw: a U from (0, 0) to (32, 0) through (16, 20).
            let t = i as f32 / 16.0;
            *p = (32.0 * t, 20.0 * (1.0 - (2.0 * t - 1.0).powi(2)));
        }
        lm[30] = (16.0, 5.0);
        for (k, p) in lm[36..42].iter_mut().enumerate() {
            *p = (8.0 + k as f32 * 0.1, -5.0);
        }
        for (k, p) in lm[42..48].iter_mut().enumerate() {
            *p = (24.0 - (5 - k) as f32 * 0.1, -5.0);
        }
        let (yaw, roll) = pose(&lm);
        assert!(yaw.abs() < 1e-6 && roll.abs() < 1e-3, "{yaw} {roll}");
        // The nose turned towards the jaw's last landmark: positive yaw; the right eye
        // lower: positive roll.
        lm[30] = (26.0, 5.0);
        for p in &mut lm[42..48] {
            p.1 = 0.0;
        }
        let (yaw, roll) = pose(&lm);
        assert!(yaw > 0.2, "{yaw}");
        assert!(roll > 10.0, "{roll}");
    }
}
