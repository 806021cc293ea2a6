//! CPU image pre-processing: letterboxing for the detectors, affine warps (square crops,
//! aligned face chips), and packing into the planar `[3, H, W]` float layout the models
//! take (raw RGB values 0..255; each model normalises inside its graph). Every resampling
//! follows one definition, [`Sampler`], which the device kernel (`shaders/warp.wgsl`)
//! follows too, so both paths give the networks the same input.

use image::RgbImage;

mod resample;

pub use resample::{MAX_RADIUS, Sampler, resample};

/// A 2-D affine map `p' = [a b; c d] p + [tx ty]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Affine {
    /// Uniform scale `s` then translation.
    pub fn scale_translate(s: f32, tx: f32, ty: f32) -> Self {
        Self {
            a: s,
            b: 0.0,
            c: 0.0,
            d: s,
            tx,
            ty,
        }
    }

    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.a * x + self.b * y + self.tx,
            self.c * x + self.d * y + self.ty,
        )
    }

    /// `self ∘ other`: apply `other` first.
    pub fn then_after(&self, other: &Affine) -> Affine {
        Affine {
            a: self.a * other.a + self.b * other.c,
            b: self.a * other.b + self.b * other.d,
            c: self.c * other.a + self.d * other.c,
            d: self.c * other.b + self.d * other.d,
            tx: self.a * other.tx + self.b * other.ty + self.tx,
            ty: self.c * other.tx + self.d * other.ty + self.ty,
        }
    }

    /// Geometric mean scale (pixels of the target per pixel of the source).
    pub fn scale(&self) -> f32 {
        (self.a * self.d - self.b * self.c).abs().sqrt()
    }
}

/// Largest upscaling `letterbox` applies. Small images (e.g. 64x64 face crops) blown up
/// to fill the detector's input become blurry giants the detectors miss; at most 2x they
/// stay in the range of face sizes the detectors were trained on.
pub const MAX_UPSCALE: f32 = 2.0;

/// Resizes `img` so its longer side is `size` (upscaling at most `MAX_UPSCALE` times),
/// pastes it at the top-left of a black `size` x `size` square (padding bottom/right, as
/// face-api's detectors expect), and returns the planar float input and the scale from
/// original pixels to input pixels.
pub fn letterbox(img: &RgbImage, size: u32) -> (Vec<f32>, f32) {
    letterbox_fit(img, size, size)
}

/// As `letterbox`, with the image's longer side resized to `fit` (at most `size`) inside
/// the `size` square: a margin of black around a small image.
pub fn letterbox_fit(img: &RgbImage, fit: u32, size: u32) -> (Vec<f32>, f32) {
    let mut out = vec![0f32; 3 * (size * size) as usize];
    let scale = letterbox_fit_into(img, fit, size, &mut out);
    (out, scale)
}

/// As `letterbox_fit`, written into `out` (`3 * size * size` values, overwritten whole):
/// a batch's input is filled in place, image by image, with no buffer per image.
pub fn letterbox_fit_into(img: &RgbImage, fit: u32, size: u32, out: &mut [f32]) -> f32 {
    letterbox_cut_into(img, fit, size, size, out)
}

/// The top-left `width` x `height` of `letterbox_fit`'s square (`fit` at most the larger of
/// the two), written into `out` (`3 * width * height` values, overwritten whole): where
/// the image covers only part of the square (a landscape photo two thirds of its rows), a
/// fully convolutional network is spared the margin (`letterbox_cut`). Returns the scale.
pub fn letterbox_cut_into(
    img: &RgbImage,
    fit: u32,
    width: u32,
    height: u32,
    out: &mut [f32],
) -> f32 {
    let (w, h) = img.dimensions();
    let fit = fit.min(width.max(height));
    let sampler = Sampler::letterbox(w, h, fit);
    let (rw, rh) = sampler.extent;
    let (rw, rh) = (rw.min(width), rh.min(height));
    let small = resample(img, &sampler, rw, rh);
    let plane = (width * height) as usize;
    assert_eq!(out.len(), 3 * plane, "a {width}x{height} planar input");
    let (rw, rh, width) = (rw as usize, rh as usize, width as usize);
    for (c, channel) in out.chunks_exact_mut(plane).enumerate() {
        // Each value written once: the image's pixels, then the black margin.
        for (y, row) in channel.chunks_exact_mut(width).enumerate() {
            if y < rh {
                let src = &small.as_raw()[y * rw * 3..(y + 1) * rw * 3];
                for (v, p) in row[..rw].iter_mut().zip(src.chunks_exact(3)) {
                    *v = p[c] as f32;
                }
                row[rw..].fill(0.0);
            } else {
                row.fill(0.0);
            }
        }
    }
    letterbox_scale(w, h, fit)
}

/// The detectors' coarsest grid cell, in input pixels: their input sides are multiples
/// of it.
pub const DETECTOR_CELL: u32 = 32;
/// The smallest detector input side: four cells.
pub const DETECTOR_MIN_SIDE: u32 = 128;

/// `n` input pixels rounded up to whole detector cells, at least `DETECTOR_MIN_SIDE` and at
/// most `max`.
pub fn detector_side(n: u32, max: u32) -> u32 {
    n.div_ceil(DETECTOR_CELL)
        .saturating_mul(DETECTOR_CELL)
        .clamp(DETECTOR_MIN_SIDE.min(max), max)
}

/// The input `letterbox_cut_into` needs for a `w` x `h` image with its longer side at
/// `fit` in a `side` square: the rows and columns the image covers, each a
/// `detector_side` of at most `side`. A 3:2 photo at 512 needs 512 x 352: a third less
/// work for the detector.
pub fn letterbox_cut(w: u32, h: u32, fit: u32, side: u32) -> (u32, u32) {
    let (rw, rh) = letterbox_extent(w, h, fit.min(side));
    (detector_side(rw, side), detector_side(rh, side))
}

/// The scale `letterbox` applies to a `w` x `h` image: longer side to `size`, at most
/// `MAX_UPSCALE`.
pub fn letterbox_scale(w: u32, h: u32, size: u32) -> f32 {
    (size as f32 / w.max(h) as f32).min(MAX_UPSCALE)
}

/// The size of the resized image inside `letterbox`'s square.
pub fn letterbox_extent(w: u32, h: u32, size: u32) -> (u32, u32) {
    let scale = letterbox_scale(w, h, size);
    let side = |n: u32| ((n as f32 * scale).round() as u32).clamp(1, size);
    (side(w), side(h))
}

/// Packs an RGB image into planar `[3, H, W]` floats, values 0..255.
pub fn to_planar(img: &RgbImage) -> Vec<f32> {
    let mut out = vec![0f32; 3 * (img.width() * img.height()) as usize];
    to_planar_into(img, &mut out);
    out
}

/// As `to_planar`, written into `out` (`3 * width * height` values).
pub fn to_planar_into(img: &RgbImage, out: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * plane, "a planar input of the image's size");
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((p, r), g), b) in img.pixels().zip(r).zip(g).zip(b) {
        *r = p[0] as f32;
        *g = p[1] as f32;
        *b = p[2] as f32;
    }
}

/// Samples an `out_w` x `out_h` image whose pixel `(u, v)` comes from `img` at
/// `out_to_img(u, v)`: bilinear, anti-aliased when the map shrinks, black outside the
/// image (`Sampler::warp`).
pub fn warp(img: &RgbImage, out_to_img: &Affine, out_w: u32, out_h: u32) -> RgbImage {
    resample(img, &Sampler::warp(*out_to_img), out_w, out_h)
}

/// The map from a `size` x `size` output to the axis-aligned square of side `side`
/// centred at `(cx, cy)` in the source.
pub fn square_crop_map(cx: f32, cy: f32, side: f32, size: u32) -> Affine {
    let s = side / size as f32;
    Affine::scale_translate(s, cx - side / 2.0, cy - side / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    pub(super) fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, 100])
        })
    }

    #[test]
    fn identity_warp_is_exact() {
        let img = checker(37, 23);
        let out = warp(&img, &Affine::scale_translate(1.0, 0.0, 0.0), 37, 23);
        assert_eq!(out, img);
    }

    #[test]
    fn integer_shift_moves_pixels_and_fills_black() {
        let img = checker(20, 20);
        let out = warp(&img, &Affine::scale_translate(1.0, 5.0, 3.0), 20, 20);
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(5, 3));
        assert_eq!(out.get_pixel(19, 19), &Rgb([0, 0, 0]));
    }

    #[test]
    fn letterbox_pads_bottom_right() {
        let img = RgbImage::from_pixel(100, 50, Rgb([200, 100, 50]));
        let (planar, scale) = letterbox(&img, 64);
        assert!((scale - 0.64).abs() < 1e-6);
        let plane = 64 * 64;
        assert_eq!(planar[0], 200.0);
        assert_eq!(planar[plane], 100.0);
        assert_eq!(
            planar[2 * plane + 63 * 64 + 63],
            0.0,
            "bottom-right is padding"
        );
        assert_eq!(planar[2 * plane + 31 * 64 + 63], 50.0, "inside the image");
    }

    #[test]
    fn letterbox_into_overwrites_every_value() {
        let img = checker(100, 37);
        let (want, scale) = letterbox_fit(&img, 48, 64);
        let mut out = vec![7.0f32; 3 * 64 * 64];
        assert_eq!(letterbox_fit_into(&img, 48, 64, &mut out), scale);
        assert_eq!(out, want);
    }

    #[test]
    fn a_cut_letterbox_is_the_top_left_of_the_square() {
        let img = checker(600, 400);
        assert_eq!(letterbox_cut(600, 400, 512, 512), (512, 352));
        assert_eq!(letterbox_cut(400, 600, 512, 512), (352, 512));
        // Small images: at least four cells, at most the square.
        assert_eq!(letterbox_cut(60, 20, 96, 128), (128, 128));
        assert_eq!(letterbox_cut(3000, 10, 512, 512), (512, 128));
        let (square, scale) = letterbox_fit(&img, 512, 512);
        let mut cut = vec![7.0f32; 3 * 512 * 352];
        assert_eq!(letterbox_cut_into(&img, 512, 512, 352, &mut cut), scale);
        for (c, plane) in cut.chunks_exact(512 * 352).enumerate() {
            let full = &square[c * 512 * 512..][..512 * 352];
            assert_eq!(plane, full, "channel {c}");
        }
    }

    #[test]
    fn letterbox_upscales_small_images_at_most_twice() {
        let img = RgbImage::from_pixel(64, 64, Rgb([9, 9, 9]));
        let (planar, scale) = letterbox(&img, 512);
        assert_eq!(scale, MAX_UPSCALE);
        assert_eq!(planar[127 * 512 + 127], 9.0);
        assert_eq!(planar[128 * 512 + 128], 0.0);
    }

    #[test]
    fn compose_applies_right_then_left() {
        let first = Affine::scale_translate(2.0, 1.0, 0.0);
        let second = Affine::scale_translate(1.0, 0.0, 10.0);
        let both = second.then_after(&first);
        assert_eq!(both.apply(3.0, 4.0), (7.0, 18.0));
    }
}
