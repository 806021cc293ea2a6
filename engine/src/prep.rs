//! CPU image pre-processing: resizing with `fast_image_resize`, letterboxing for the
//! detectors, affine warps (square crops, aligned face chips), and packing into the
//! planar `[3, H, W]` float layout the models take (raw RGB values 0..255; each model
//! normalises inside its graph).

use fast_image_resize::{self as fir, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

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

/// Resizes `img` to exactly `w` x `h` with an anti-aliasing bilinear filter.
pub fn resize(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    if img.dimensions() == (w, h) {
        return img.clone();
    }
    let mut dst = fir::images::Image::new(w, h, PixelType::U8x3);
    let src = fir::images::ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("an RgbImage buffer is always width*height*3 bytes");
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fir::FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("both images are U8x3, so the resizer cannot reject them");
    RgbImage::from_raw(w, h, dst.into_vec()).expect("resizer output has w*h*3 bytes")
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
    let (w, h) = img.dimensions();
    let scale = letterbox_scale(w, h, size);
    let rw = ((w as f32 * scale).round() as u32).clamp(1, size);
    let rh = ((h as f32 * scale).round() as u32).clamp(1, size);
    let small = resize(img, rw, rh);
    let plane = (size * size) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (x, y, p) in small.enumerate_pixels() {
        let i = (y * size + x) as usize;
        out[i] = p[0] as f32;
        out[plane + i] = p[1] as f32;
        out[2 * plane + i] = p[2] as f32;
    }
    (out, scale)
}

/// The scale `letterbox` applies to a `w` x `h` image: longer side to `size`, at most
/// `MAX_UPSCALE`.
pub fn letterbox_scale(w: u32, h: u32, size: u32) -> f32 {
    (size as f32 / w.max(h) as f32).min(MAX_UPSCALE)
}

/// Packs an RGB image into planar `[3, H, W]` floats, values 0..255.
pub fn to_planar(img: &RgbImage) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        out[i] = p[0] as f32;
        out[plane + i] = p[1] as f32;
        out[2 * plane + i] = p[2] as f32;
    }
    out
}

/// Samples an `out_w` x `out_h` image whose pixel `(u, v)` comes from `img` at
/// `out_to_img(u, v)` (bilinear; black outside the image). When the map shrinks the
/// source by more than 1.5x, the source region is first downscaled with an
/// anti-aliasing filter so the result does not alias.
pub fn warp(img: &RgbImage, out_to_img: &Affine, out_w: u32, out_h: u32) -> RgbImage {
    let shrink = out_to_img.scale();
    if shrink > 1.5 {
        // Bounding box of the output's footprint in the source, clipped to the image.
        let corners = [
            out_to_img.apply(0.0, 0.0),
            out_to_img.apply(out_w as f32, 0.0),
            out_to_img.apply(0.0, out_h as f32),
            out_to_img.apply(out_w as f32, out_h as f32),
        ];
        let (lo, hi) = corners.iter().fold(
            ((f32::MAX, f32::MAX), (f32::MIN, f32::MIN)),
            |(lo, hi), &(x, y)| ((lo.0.min(x), lo.1.min(y)), (hi.0.max(x), hi.1.max(y))),
        );
        let (x0, y0) = (lo.0.floor().max(0.0), lo.1.floor().max(0.0));
        let x1 = hi.0.ceil().min(img.width() as f32);
        let y1 = hi.1.ceil().min(img.height() as f32);
        if x1 - x0 >= 2.0 && y1 - y0 >= 2.0 {
            let crop = image::imageops::crop_imm(
                img,
                x0 as u32,
                y0 as u32,
                (x1 - x0) as u32,
                (y1 - y0) as u32,
            )
            .to_image();
            let factor = 1.0 / shrink;
            let sw = ((crop.width() as f32 * factor).round() as u32).max(2);
            let sh = ((crop.height() as f32 * factor).round() as u32).max(2);
            let small = resize(&crop, sw, sh);
            // small pixel = (img pixel - origin) * (sw / crop_w)
            let fx = sw as f32 / crop.width() as f32;
            let fy = sh as f32 / crop.height() as f32;
            let img_to_small = Affine {
                a: fx,
                b: 0.0,
                c: 0.0,
                d: fy,
                tx: -x0 * fx,
                ty: -y0 * fy,
            };
            return warp_bilinear(&small, &img_to_small.then_after(out_to_img), out_w, out_h);
        }
    }
    warp_bilinear(img, out_to_img, out_w, out_h)
}

fn warp_bilinear(img: &RgbImage, out_to_img: &Affine, out_w: u32, out_h: u32) -> RgbImage {
    let mut out = RgbImage::new(out_w, out_h);
    for (u, v, p) in out.enumerate_pixels_mut() {
        // Pixel centres: output (u+0.5, v+0.5) maps to source coordinates.
        let (sx, sy) = out_to_img.apply(u as f32 + 0.5, v as f32 + 0.5);
        let value = bilinear(img, sx, sy);
        for k in 0..3 {
            p[k] = value[k].round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The bilinear sample of `img` at source coordinates `(sx, sy)`, where source pixel
/// `(i, j)` has its centre at `(i+0.5, j+0.5)`; black outside the image.
pub fn bilinear(img: &RgbImage, sx: f32, sy: f32) -> [f32; 3] {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let px = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        let i = ((y * w + x) * 3) as usize;
        [raw[i] as f32, raw[i + 1] as f32, raw[i + 2] as f32]
    };
    let (fx, fy) = (sx - 0.5, sy - 0.5);
    let (x0, y0) = (fx.floor() as i64, fy.floor() as i64);
    let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
    let (p00, p10, p01, p11) = (
        px(x0, y0),
        px(x0 + 1, y0),
        px(x0, y0 + 1),
        px(x0 + 1, y0 + 1),
    );
    std::array::from_fn(|k| {
        let top = p00[k] + (p10[k] - p00[k]) * ax;
        let bottom = p01[k] + (p11[k] - p01[k]) * ax;
        top + (bottom - top) * ay
    })
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

    fn checker(w: u32, h: u32) -> RgbImage {
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

    #[test]
    fn strong_downscale_averages_instead_of_aliasing() {
        // 1-pixel stripes: naive bilinear sampling at 8x would hit only one colour.
        let img = RgbImage::from_fn(256, 256, |x, _| {
            if x % 2 == 0 {
                Rgb([255; 3])
            } else {
                Rgb([0; 3])
            }
        });
        let out = warp(&img, &square_crop_map(128.0, 128.0, 256.0, 32), 32, 32);
        let mean: f32 = out.pixels().map(|p| p[0] as f32).sum::<f32>() / (32.0 * 32.0);
        assert!((mean - 127.5).abs() < 20.0, "mean {mean}");
    }
}
