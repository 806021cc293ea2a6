//! CPU image pre-processing: letterboxing for the detectors, affine warps (square crops,
//! aligned face chips), and packing into the planar `[3, H, W]` float layout the models
//! take (raw RGB values 0..255; each model normalises inside its graph). Every resampling
//! follows one definition, [`Sampler`], which the device kernel (`shaders/warp.wgsl`)
//! follows too, so both paths give the networks the same input.

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
    letterbox_cut_into(img, fit.min(size), size, size, out)
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

/// The input `letterbox_cut_into` needs for a `w` x `h` image with its longer side at
/// `fit` in a `side` square: the rows and columns the image covers, each rounded up to
/// a multiple of 32 (the detectors' coarsest grid), at least 128 (four cells) and at most
/// `side`. A 3:2 photo at 512 needs 512 x 352: a third less work for the detector.
pub fn letterbox_cut(w: u32, h: u32, fit: u32, side: u32) -> (u32, u32) {
    let (rw, rh) = letterbox_extent(w, h, fit.min(side));
    let cut = |n: u32| n.div_ceil(32).saturating_mul(32).clamp(128.min(side), side);
    (cut(rw), cut(rh))
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

/// Largest filter radius `Sampler` uses, in source pixels: a shrink by more than this
/// (a face over 4800 px wide cut to a 150 px chip) is filtered as a shrink by this.
pub const MAX_RADIUS: f32 = 32.0;

/// Source coordinates at least this far from the origin are outside any image.
const FAR: f32 = 1e6;

/// Whether a source coordinate may touch an image (false for NaN too).
fn near(v: f32) -> bool {
    v.abs() < FAR
}

/// The tent filter's weight of the source pixel at index `i` for a sample at continuous
/// index `f` (pixel `i` sits at `i`), radius `r`.
fn tent(i: i64, f: f32, r: f32) -> f32 {
    1.0 - (i as f32 - f).abs() / r
}

/// One resampling of a source image, the definition both pre-processing paths follow:
/// `resample` here on the CPU and `shaders/warp.wgsl` on the device.
///
/// Output pixel `(x, y)` has its centre at `(x + 0.5, y + 0.5)`; `map` takes it to source
/// coordinates, where source pixel `(i, j)` has its centre at `(i + 0.5, j + 0.5)`. The
/// value there is a tent filter of `radius` source pixels over the source pixels (radius
/// 1 is exactly bilinear interpolation; a shrink by `s` uses `s`, the anti-aliasing
/// filter of a bilinear resize), normalised by its weights, rounded to a whole grey
/// level as an 8-bit image is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Output pixel coordinates -> source pixel coordinates.
    pub map: Affine,
    /// Tent radius in source pixels, 1 ..= `MAX_RADIUS`.
    pub radius: f32,
    /// Whether source pixels outside the image are left out of the filter (repeating the
    /// edge, as a resize does) instead of counting as black (as a crop beyond the image
    /// does).
    pub clamp: bool,
    /// Output pixels at or beyond this width and height are black (a letterbox's padding).
    pub extent: (u32, u32),
}

impl Sampler {
    /// A crop, chip or any affine view: black beyond the image, anti-aliased by the map's
    /// own shrink.
    pub fn warp(map: Affine) -> Self {
        Self {
            map,
            radius: map.scale().clamp(1.0, MAX_RADIUS),
            clamp: false,
            extent: (u32::MAX, u32::MAX),
        }
    }

    /// `letterbox`'s resize of a `w` x `h` image into a `size` square: each axis scaled
    /// to its rounded extent, edges repeated, black beyond.
    pub fn letterbox(w: u32, h: u32, size: u32) -> Self {
        let (rw, rh) = letterbox_extent(w, h, size);
        let (sx, sy) = (w as f32 / rw as f32, h as f32 / rh as f32);
        Self {
            map: Affine {
                a: sx,
                b: 0.0,
                c: 0.0,
                d: sy,
                tx: 0.0,
                ty: 0.0,
            },
            radius: sx.max(sy).clamp(1.0, MAX_RADIUS),
            clamp: true,
            extent: (rw, rh),
        }
    }

    /// Output pixel `(x, y)` of `img` (the reference the WGSL kernel is tested against).
    pub fn sample(&self, img: &RgbImage, x: u32, y: u32) -> [f32; 3] {
        if x >= self.extent.0 || y >= self.extent.1 {
            return [0.0; 3];
        }
        let (sx, sy) = self.map.apply(x as f32 + 0.5, y as f32 + 0.5);
        // Continuous pixel indices: pixel i sits at i.
        let (fx, fy) = (sx - 0.5, sy - 0.5);
        let r = self.radius;
        // Far outside any image (or not a number): black, as the kernel decides it.
        if !(near(fx) && near(fy)) {
            return [0.0; 3];
        }
        let (w, h) = (img.width() as i64, img.height() as i64);
        let raw = img.as_raw();
        let mut acc = [0f32; 3];
        let mut total = 0f32;
        for iy in ceil(fy - r)..=floor(fy + r) {
            let wy = tent(iy, fy, r);
            if wy <= 0.0 {
                continue;
            }
            let row = (0..h)
                .contains(&iy)
                .then(|| &raw[(iy * w * 3) as usize..][..(w * 3) as usize]);
            for ix in ceil(fx - r)..=floor(fx + r) {
                let wx = tent(ix, fx, r);
                if wx <= 0.0 {
                    continue;
                }
                let weight = wx * wy;
                match row {
                    Some(row) if (0..w).contains(&ix) => {
                        let p = &row[ix as usize * 3..][..3];
                        acc[0] += weight * p[0] as f32;
                        acc[1] += weight * p[1] as f32;
                        acc[2] += weight * p[2] as f32;
                        total += weight;
                    }
                    _ if !self.clamp => total += weight,
                    _ => {}
                }
            }
        }
        if total <= 0.0 {
            return [0.0; 3];
        }
        // Non-negative, so truncation is the floor (and needs no libm call).
        acc.map(|a| ((a / total + 0.5) as u32) as f32)
    }
}

/// `v.floor()` for `|v| < FAR`, in integer arithmetic (`f32::floor` is a libm call on
/// the baseline x86-64 target, and this runs per output pixel).
fn floor(v: f32) -> i64 {
    let t = v as i64;
    if (t as f32) > v { t - 1 } else { t }
}

/// `v.ceil()` for `|v| < FAR`, as `floor`.
fn ceil(v: f32) -> i64 {
    let t = v as i64;
    if (t as f32) < v { t + 1 } else { t }
}

/// An `out_w` x `out_h` image resampled from `img` by `sampler`.
pub fn resample(img: &RgbImage, sampler: &Sampler, out_w: u32, out_h: u32) -> RgbImage {
    if sampler.map.b == 0.0 && sampler.map.c == 0.0 {
        return resample_separable(img, sampler, out_w, out_h);
    }
    let mut out = RgbImage::new(out_w, out_h);
    for (x, y, p) in out.enumerate_pixels_mut() {
        *p = image::Rgb(sampler.sample(img, x, y).map(|c| c as u8));
    }
    out
}

/// The tent taps of one output coordinate along one axis: in-image source indices with
/// their weights, and the weights' total (out-of-image taps count unless `clamp`). None
/// when the coordinate is far outside any image.
fn axis_taps(f: f32, r: f32, n: u32, clamp: bool) -> Option<(Vec<(usize, f32)>, f32)> {
    if !near(f) {
        return None;
    }
    let mut taps = Vec::new();
    let mut total = 0f32;
    for i in ceil(f - r)..=floor(f + r) {
        let w = tent(i, f, r);
        if w <= 0.0 {
            continue;
        }
        if (0..n as i64).contains(&i) {
            taps.push((i as usize, w));
            total += w;
        } else if !clamp {
            total += w;
        }
    }
    Some((taps, total))
}

/// One axis's taps (`axis_taps`) for every output coordinate, flattened: output `i` reads
/// the source pixels `start..start + len` (a tent's taps inside the image are contiguous)
/// with the weights `weights[offset..offset + len]`, and divides by `total`; `None` where
/// the coordinate is far outside any image.
struct Span {
    start: usize,
    offset: usize,
    len: usize,
    total: f32,
}

struct AxisSpans {
    spans: Vec<Option<Span>>,
    weights: Vec<f32>,
}

impl AxisSpans {
    fn new(n_out: u32, coord: impl Fn(u32) -> f32, r: f32, n: u32, clamp: bool) -> Self {
        let mut weights = Vec::new();
        let spans = (0..n_out)
            .map(|i| {
                let (taps, total) = axis_taps(coord(i), r, n, clamp)?;
                let start = taps.first().map_or(0, |t| t.0);
                debug_assert!(taps.iter().enumerate().all(|(k, t)| t.0 == start + k));
                let offset = weights.len();
                weights.extend(taps.iter().map(|t| t.1));
                Some(Span {
                    start,
                    offset,
                    len: taps.len(),
                    total,
                })
            })
            .collect();
        Self { spans, weights }
    }

    /// The source indices any output reads, as a range (empty when none).
    fn reads(&self) -> std::ops::Range<usize> {
        let (lo, hi) = self
            .spans
            .iter()
            .flatten()
            .filter(|s| s.len > 0)
            .fold((usize::MAX, 0), |(lo, hi), s| {
                (lo.min(s.start), hi.max(s.start + s.len))
            });
        lo.min(hi)..hi
    }

    fn weights(&self, s: &Span) -> &[f32] {
        &self.weights[s.offset..s.offset + s.len]
    }
}

/// `resample` for a map without rotation (letterbox, square crops), in two 1-D passes:
/// the tent's weights are a product of per-axis weights, so this is the same sum as
/// `Sampler::sample` in a different order, at (2r+1) instead of (2r+1)^2 reads a pixel.
/// Each pass walks memory in order: a source row is widened to floats once, and the
/// vertical pass adds whole rows (each output value still sums its taps in tap order).
fn resample_separable(img: &RgbImage, sampler: &Sampler, out_w: u32, out_h: u32) -> RgbImage {
    let Sampler {
        map, radius, clamp, ..
    } = *sampler;
    let (w, h) = img.dimensions();
    let (ew, eh) = (out_w.min(sampler.extent.0), out_h.min(sampler.extent.1));
    let centre = |scale: f32, shift: f32| move |i: u32| scale * (i as f32 + 0.5) + shift - 0.5;
    let cols = AxisSpans::new(ew, centre(map.a, map.tx), radius, w, clamp);
    let rows = AxisSpans::new(eh, centre(map.d, map.ty), radius, h, clamp);
    // Horizontal pass over the source rows the vertical taps read, and only the source
    // columns the horizontal taps read.
    let (ys, xs) = (rows.reads(), cols.reads());
    let stride = ew as usize * 3;
    let raw = img.as_raw();
    let mut tmp = vec![0f32; ys.len() * stride];
    let mut wide = vec![0f32; xs.len() * 3];
    for (sy, row) in ys.clone().zip(tmp.chunks_exact_mut(stride)) {
        let src = &raw[(sy * w as usize + xs.start) * 3..(sy * w as usize + xs.end) * 3];
        for (f, &v) in wide.iter_mut().zip(src) {
            *f = v as f32;
        }
        for (out, span) in row.chunks_exact_mut(3).zip(&cols.spans) {
            let Some(span) = span.as_ref().filter(|s| s.len > 0) else {
                continue;
            };
            let px = &wide[(span.start - xs.start) * 3..];
            let mut acc = [0f32; 3];
            for (&wx, p) in cols.weights(span).iter().zip(px.chunks_exact(3)) {
                acc[0] += wx * p[0];
                acc[1] += wx * p[1];
                acc[2] += wx * p[2];
            }
            out.copy_from_slice(&acc);
        }
    }
    let out_stride = out_w as usize * 3;
    let mut out = vec![0u8; out_stride * out_h as usize];
    let mut acc = vec![0f32; stride];
    for (y, row) in rows.spans.iter().enumerate() {
        let Some(row) = row else { continue };
        acc.fill(0.0);
        for (k, &wy) in rows.weights(row).iter().enumerate() {
            let src = &tmp[(row.start + k - ys.start) * stride..][..stride];
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += wy * v;
            }
        }
        let dst = &mut out[y * out_stride..][..stride];
        for ((d, a), col) in dst
            .chunks_exact_mut(3)
            .zip(acc.chunks_exact(3))
            .zip(&cols.spans)
        {
            let Some(col) = col else { continue };
            let total = col.total * row.total;
            if total <= 0.0 {
                continue;
            }
            // Non-negative: the cast is the floor.
            for (d, &a) in d.iter_mut().zip(a) {
                *d = (a / total + 0.5) as u8;
            }
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("out_w * out_h * 3 values")
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

    /// Plain bilinear interpolation, black outside the image, written out.
    fn bilinear(img: &RgbImage, sx: f32, sy: f32) -> [f32; 3] {
        let px = |x: i64, y: i64| -> [f32; 3] {
            if x < 0 || y < 0 || x >= img.width() as i64 || y >= img.height() as i64 {
                return [0.0; 3];
            }
            img.get_pixel(x as u32, y as u32).0.map(f32::from)
        };
        let (fx, fy) = (sx - 0.5, sy - 0.5);
        let (x0, y0) = (fx.floor() as i64, fy.floor() as i64);
        let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
        std::array::from_fn(|k| {
            let top = px(x0, y0)[k] * (1.0 - ax) + px(x0 + 1, y0)[k] * ax;
            let bottom = px(x0, y0 + 1)[k] * (1.0 - ax) + px(x0 + 1, y0 + 1)[k] * ax;
            top * (1.0 - ay) + bottom * ay
        })
    }

    #[test]
    fn radius_one_is_bilinear_interpolation() {
        let img = checker(40, 30);
        let map = Affine {
            a: 0.83,
            b: -0.2,
            c: 0.2,
            d: 0.83,
            tx: -3.3,
            ty: 4.1,
        };
        let sampler = Sampler::warp(map);
        assert_eq!(sampler.radius, 1.0);
        for (x, y) in [(0, 0), (7, 3), (20, 20), (44, 2), (39, 29)] {
            let (sx, sy) = map.apply(x as f32 + 0.5, y as f32 + 0.5);
            let want = bilinear(&img, sx, sy);
            let got = sampler.sample(&img, x, y);
            for c in 0..3 {
                assert!(
                    (got[c] - want[c]).abs() <= 0.5 + 1e-3,
                    "({x}, {y}): {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn separable_passes_are_the_sampler() {
        // Upscale (a 64x64 face crop), mild and strong downscale, odd sizes, an off-centre
        // square crop past the edge: the two-pass resample is `Sampler::sample`, to a grey
        // level where a sum lands on a half level and the order of summing decides.
        let image = |w: u32, h: u32| {
            RgbImage::from_fn(w, h, |x, y| {
                Rgb([
                    (x * 7 % 256) as u8,
                    ((x + y) * 3 % 256) as u8,
                    (y * 11 % 256) as u8,
                ])
            })
        };
        let mut cases: Vec<(RgbImage, Sampler, u32)> = [
            (64, 64, 512),
            (61, 45, 416),
            (700, 500, 512),
            (1999, 1203, 416),
        ]
        .into_iter()
        .map(|(w, h, size)| (image(w, h), Sampler::letterbox(w, h, size), size))
        .collect();
        cases.push((
            image(90, 70),
            Sampler::warp(square_crop_map(80.0, 20.0, 50.0, 112)),
            112,
        ));
        cases.push((
            image(300, 300),
            Sampler::warp(square_crop_map(150.0, 150.0, 290.0, 112)),
            112,
        ));
        for (img, sampler, size) in cases {
            let fast = resample(&img, &sampler, size, size);
            let (mut worst, mut off) = (0f32, 0);
            for (x, y, p) in fast.enumerate_pixels() {
                let want = sampler.sample(&img, x, y);
                for c in 0..3 {
                    let d = (p[c] as f32 - want[c]).abs();
                    worst = worst.max(d);
                    off += (d > 0.0) as usize;
                }
            }
            let (w, h) = img.dimensions();
            assert!(worst <= 1.0, "{w}x{h} into {size}: off by {worst}");
            assert!(
                off * 1000 <= (size * size * 3) as usize,
                "{w}x{h}: {off} values off"
            );
        }
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
