//! One resampling definition, [`Sampler`] (a tent filter over an affine map), and its CPU
//! implementation, `resample`: per pixel for rotated maps, in two 1-D passes for maps
//! without rotation (letterboxes, square crops).

use image::RgbImage;

use super::{Affine, letterbox_extent};

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

/// One axis's tent taps for every output coordinate, flattened: output `i` reads the
/// source pixels `start..start + len` with the weights `weights[offset..offset + len]`,
/// and divides by `total` (the weights' sum; taps outside the image count too unless the
/// sampler clamps); `None` where the coordinate is far outside any image.
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
                let f = coord(i);
                if !near(f) {
                    return None;
                }
                // The tent is positive inside its radius, so the taps inside the image
                // are one run of source indices.
                let (offset, mut start, mut total) = (weights.len(), None, 0f32);
                for j in ceil(f - r)..=floor(f + r) {
                    let w = tent(j, f, r);
                    if w <= 0.0 {
                        continue;
                    }
                    if (0..n as i64).contains(&j) {
                        start.get_or_insert(j as usize);
                        weights.push(w);
                        total += w;
                    } else if !clamp {
                        total += w;
                    }
                }
                Some(Span {
                    start: start.unwrap_or(0),
                    offset,
                    len: weights.len() - offset,
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
    let (ys, xs) = (rows.reads(), cols.reads());
    if (eh as usize) < ys.len() {
        return shrink_rows_first(img, (&cols, &rows), xs, (out_w, out_h));
    }
    // Horizontal pass over the source rows the vertical taps read, and only the source
    // columns the horizontal taps read.
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
            out.copy_from_slice(&taps(cols.weights(span), px));
        }
    }
    let rows_of_tmp = |sy: usize| &tmp[(sy - ys.start) * stride..][..stride];
    sum_and_write(
        (&cols, &rows),
        stride,
        rows_of_tmp,
        (out_w, out_h),
        |acc, x, _| [acc[x * 3], acc[x * 3 + 1], acc[x * 3 + 2]],
    )
}

/// `resample_separable` for a vertical shrink (a photo letterboxed for a detector: 1280
/// source rows into 341), in the other order: each output row first sums its taps of whole
/// source rows (bytes widened as they are read; contiguous, so it vectorises), then the
/// horizontal taps run over the output rows only, not over every source row. The same
/// per-axis weights; the sum in another order (to a grey level at a half level, as the
/// other order is).
fn shrink_rows_first(
    img: &RgbImage,
    (cols, rows): (&AxisSpans, &AxisSpans),
    xs: std::ops::Range<usize>,
    (out_w, out_h): (u32, u32),
) -> RgbImage {
    let w = img.width() as usize;
    let raw = img.as_raw();
    let wide = xs.len() * 3;
    let source_row = |sy: usize| &raw[(sy * w + xs.start) * 3..][..wide];
    sum_and_write(
        (cols, rows),
        wide,
        source_row,
        (out_w, out_h),
        |acc, _, col| {
            taps(
                cols.weights(col),
                &acc[(col.start.max(xs.start) - xs.start) * 3..],
            )
        },
    )
}

/// The row loop both orders share: for each output row, `acc` (`width` values) = its
/// vertical taps over `row(source index)`; then output pixel `x` is `pixel(acc, x, its
/// column's span)` over the two spans' total, rounded to a grey level (black where a span
/// is missing or its total is not positive).
fn sum_and_write<'a, T: Copy + Into<f32> + 'a>(
    (cols, rows): (&AxisSpans, &AxisSpans),
    width: usize,
    row: impl Fn(usize) -> &'a [T],
    (out_w, out_h): (u32, u32),
    pixel: impl Fn(&[f32], usize, &Span) -> [f32; 3],
) -> RgbImage {
    let out_stride = out_w as usize * 3;
    let mut out = vec![0u8; out_stride * out_h as usize];
    let mut acc = vec![0f32; width];
    for (y, span) in rows.spans.iter().enumerate() {
        let Some(span) = span else { continue };
        sum_rows(&mut acc, rows.weights(span), |k| row(span.start + k));
        let dst = &mut out[y * out_stride..][..out_stride];
        for (x, (d, col)) in dst.chunks_exact_mut(3).zip(&cols.spans).enumerate() {
            let Some(col) = col else { continue };
            let total = col.total * span.total;
            if total <= 0.0 {
                continue;
            }
            // Non-negative: the cast is the floor.
            for (d, a) in d.iter_mut().zip(pixel(&acc, x, col)) {
                *d = (a / total + 0.5) as u8;
            }
        }
    }
    RgbImage::from_raw(out_w, out_h, out).expect("out_w * out_h * 3 values")
}

/// `acc` = the sum over taps `k` of `weights[k]` times `row(k)`, value by value, in tap
/// order.
fn sum_rows<'a, T: Copy + Into<f32> + 'a>(
    acc: &mut [f32],
    weights: &[f32],
    row: impl Fn(usize) -> &'a [T],
) {
    acc.fill(0.0);
    for (k, &wy) in weights.iter().enumerate() {
        for (a, &v) in acc.iter_mut().zip(row(k)) {
            *a += wy * v.into();
        }
    }
}

/// One output pixel of a horizontal pass: `weights` over the RGB pixels from `px` on.
fn taps(weights: &[f32], px: &[f32]) -> [f32; 3] {
    let mut acc = [0f32; 3];
    for (&wx, p) in weights.iter().zip(px.chunks_exact(3)) {
        acc[0] += wx * p[0];
        acc[1] += wx * p[1];
        acc[2] += wx * p[2];
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prep::tests::checker;
    use crate::prep::{square_crop_map, warp};
    use image::Rgb;

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
