//! Each WGSL kernel against its plain-Rust reference, and their limits.

use super::*;

#[test]
fn warp_kernel_agrees_with_its_reference() {
    let a = photo(97, 61, 1);
    let b = photo(640, 480, 2);
    let sources = [&a, &b];
    let rot = |deg: f32, s: f32, tx: f32, ty: f32| {
        let (sin, cos) = deg.to_radians().sin_cos();
        Affine {
            a: s * cos,
            b: -s * sin,
            c: s * sin,
            d: s * cos,
            tx,
            ty,
        }
    };
    let jobs = [
        // identity crop, upscale 2x (black beyond the image), rotated chip
        WarpJob::warp(0, Affine::scale_translate(1.0, 0.0, 0.0)),
        WarpJob::warp(0, Affine::scale_translate(0.5, 0.0, 0.0)),
        WarpJob::warp(1, rot(17.0, 1.3, 200.0, 120.0)),
        // strong shrink (a tent of 4.7 px) and a shrink past the radius limit
        WarpJob::warp(1, Affine::scale_translate(640.0 / 150.0 * 1.1, -3.0, 0.0)),
        WarpJob::warp(1, Affine::scale_translate(40.0, 0.0, 0.0)),
        // letterboxes: an upscale of a small image, a downscale (edges repeat, padding)
        WarpJob::letterbox(0, 97, 61, 150),
        WarpJob::letterbox(1, 640, 480, 150),
    ];
    assert_eq!(jobs[4].sampler.radius, prep::MAX_RADIUS);
    let on_device = DeviceImages::upload(&wgpu_device(), &sources).expect("upload");
    let recognition = Normalize {
        mean: [122.782, 117.001, 104.298],
        scale: [1.0 / 255.0; 3],
    };
    // The kernel rounds to whole grey levels as the reference does; FMA on the device
    // rounds the filter sums differently, so a value at a half level may round the other
    // way: one level at most, on few pixels.
    for (norm, level) in [(Normalize::RAW, 1.0), (recognition, 1.0 / 255.0)] {
        let got = on_device
            .warp_to_host(&jobs, 150, 150, norm)
            .expect("warp runs");
        let want = gpu::warp::reference(&sources, &jobs, 150, 150, norm);
        assert_eq!(got.len(), jobs.len() * 3 * 150 * 150);
        let diffs: Vec<f32> = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).collect();
        let worst = diffs.iter().copied().fold(0f32, f32::max);
        let off = diffs.iter().filter(|&&d| d > level * 1e-3).count();
        assert!(worst <= level * 1.001, "max abs diff {worst} ({norm:?})");
        assert!(
            off * 1000 <= diffs.len(),
            "{off} of {} values off by a level ({norm:?})",
            diffs.len()
        );
    }
    // A letterbox is the CPU pipeline's letterbox (its two-pass resample) to a grey level.
    let boxed = on_device
        .warp_to_host(&jobs[6..], 150, 150, Normalize::RAW)
        .expect("warp runs");
    let (cpu, _) = prep::letterbox(&b, 150);
    let worst = boxed
        .iter()
        .zip(&cpu)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1.0, "letterbox off by {worst}");
    // The padding is black, the interior is not.
    let raw = on_device
        .warp_to_host(&jobs[1..2], 150, 150, Normalize::RAW)
        .expect("warp runs");
    assert_eq!(raw[149 * 150 + 149], 0.0);
    assert!(raw[10 * 150 + 10] > 0.0);
    // The warp is a Burn tensor: the networks (and any tensor op) take it as it lies.
    let tensor = on_device
        .warp(&jobs[..2], 150, 150, Normalize::RAW)
        .expect("warp runs");
    assert_eq!(tensor.dims(), [2, 3, 150, 150]);
    let sum: f32 = tensor.sum().into_scalar();
    let want: f32 = gpu::warp::reference(&sources, &jobs[..2], 150, 150, Normalize::RAW)
        .iter()
        .sum();
    assert!((sum - want).abs() <= want * 1e-4, "{sum} vs {want}");
}

#[test]
fn warp_kernel_rejects_unknown_sources() {
    let a = photo(8, 8, 3);
    let job = WarpJob::warp(1, Affine::scale_translate(1.0, 0.0, 0.0));
    let on_device = DeviceImages::upload(&wgpu_device(), &[&a]).expect("upload");
    assert!(on_device.warp(&[job], 4, 4, Normalize::RAW).is_err());
    assert!(on_device.warp(&[], 4, 4, Normalize::RAW).is_err());
    // The kernel needs a wgpu device.
    assert!(DeviceImages::upload(&Device::flex(), &[&a]).is_err());
}

/// Picking images out of a network batch gives the same planes on the host and on the
/// device (the SSD-then-Tiny second look reuses a device batch this way).
#[test]
fn selecting_images_of_a_batch_agrees_on_host_and_device() {
    let (n, h, w) = (4usize, 5u32, 3u32);
    let per = 3 * (h * w) as usize;
    let data: Vec<f32> = (0..n * per).map(|v| v as f32).collect();
    let host = NetInput::host(data, n, h, w);
    let device = NetInput::Device(host.clone().into_tensor(&wgpu_device()));
    let rows = [3, 0, 2];
    let (from_host, shape) = host.select(&rows).into_host().expect("host");
    let (from_device, dshape) = device.select(&rows).into_host().expect("read back");
    assert_eq!(shape, [3, 3, h as usize, w as usize]);
    assert_eq!(dshape, shape);
    assert_eq!(from_device, from_host);
    assert_eq!(from_host[0], (3 * per) as f32);
    assert_eq!(from_host[per], 0.0);
}

fn norms(matrix: &[f32]) -> Vec<f32> {
    matrix
        .chunks_exact(DIM)
        .map(|r| r.iter().map(|x| x * x).sum())
        .collect()
}

/// The kernel's neighbours match the reference: same distances, and each returned row
/// really is at that distance (rows may swap only between near-equal distances). The
/// kernel computes |q|^2 + |r|^2 - 2 q.r in f32, so a squared distance carries an error
/// of about 1e-6 of |q|^2 + |r|^2 (its square root is 3e-3 for an exact match of a norm-6
/// row): the bound is 1e-5 of that sum on squared distances.
fn assert_agrees(got: &[Vec<Neighbour>], want: &[Vec<Neighbour>], matrix: &[f32], queries: &[f32]) {
    let sq = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>();
    assert_eq!(got.len(), want.len());
    for (qi, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "query {qi}: {g:?} vs {w:?}");
        let q = &queries[qi * DIM..(qi + 1) * DIM];
        for (gn, wn) in g.iter().zip(w) {
            let row = &matrix[gn.row as usize * DIM..(gn.row as usize + 1) * DIM];
            let want_row = &matrix[wn.row as usize * DIM..(wn.row as usize + 1) * DIM];
            let tol = 1e-5 * (2.0 * sq(q) + sq(row) + sq(want_row)).max(1.0);
            let close = |a: f32, b: f32| (a * a - b * b).abs() <= tol;
            assert!(
                close(gn.distance, wn.distance),
                "query {qi}: {g:?} vs {w:?}"
            );
            let exact = q
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            assert!(close(gn.distance, exact), "query {qi} row {}", gn.row);
        }
    }
}

#[test]
fn search_kernel_agrees_with_its_reference_across_chunks_and_segments() {
    let rows = 10_000;
    let matrix = noise(7, rows * DIM);
    let norms = norms(&matrix);
    // 13 queries: noise, plus exact copies of rows in different chunks (distance 0).
    let mut queries = noise(8, 10 * DIM);
    for r in [0, 4097, rows - 1] {
        queries.extend_from_slice(&matrix[r * DIM..(r + 1) * DIM]);
    }
    for segment_rows in [usize::MAX / 2, 4096, 1000] {
        let g = GpuGallery::upload_segmented(gpu(), &matrix, &norms, segment_rows.min(rows))
            .expect("upload");
        for k in [1, 5, 8] {
            let got = g.search(&queries, k).expect("search");
            let want = gpu::search::reference(&matrix, &norms, &queries, k);
            assert_agrees(&got, &want, &matrix, &queries);
            for (i, r) in [0u32, 4097, rows as u32 - 1].into_iter().enumerate() {
                assert_eq!(got[10 + i][0].row, r, "an enrolled row finds itself first");
            }
        }
    }
    let g = GpuGallery::upload(gpu(), &matrix, &norms).expect("upload");
    assert_eq!(g.segments(), 1);
}

#[test]
fn search_kernel_small_galleries_and_bad_arguments() {
    let matrix = noise(9, 3 * DIM);
    let norms = norms(&matrix);
    let g = GpuGallery::upload(gpu(), &matrix, &norms).expect("upload");
    let q = noise(10, DIM);
    let got = g.search(&q, 5).expect("search");
    assert_eq!(got[0].len(), 3, "k beyond the gallery returns every row");
    assert_agrees(
        &got,
        &gpu::search::reference(&matrix, &norms, &q, 5),
        &matrix,
        &q,
    );
    assert!(g.search(&q, 0).is_err());
    assert!(g.search(&q, gpu::search::MAX_K + 1).is_err());
    assert!(g.search(&q[..DIM - 1], 1).is_err());
    assert!(GpuGallery::upload(gpu(), &matrix[..DIM], &norms).is_err());
    let empty = GpuGallery::upload(gpu(), &[], &[]).expect("empty upload");
    assert_eq!(empty.search(&q, 1).expect("search"), vec![Vec::new()]);
}

/// On a device whose buffers are capped at 1 MiB (a small GPU's limits, on any adapter):
/// a gallery and a query batch each larger than that are split to fit and answer as the
/// reference does; a segment the device refuses is an error of the call (wgpu's error
/// scopes), and the device still serves the next call.
#[test]
fn search_fits_a_small_device_and_reports_what_it_refuses() {
    const MIB: usize = 1 << 20;
    let small = Gpu::open_capped(MIB as u64).expect("a capped device");
    let rows = 5000; // 2.4 MiB of rows
    let matrix = noise(11, rows * DIM);
    let norms = norms(&matrix);
    let g = GpuGallery::upload(small.clone(), &matrix, &norms).expect("upload in segments");
    assert_eq!(g.segments(), rows.div_ceil(MIB / (DIM * 4)));
    // 2100 queries: 1.03 MiB of queries, more than one binding holds.
    let mut queries = noise(12, 2096 * DIM);
    for r in [0, 2047, 2048, rows - 1] {
        queries.extend_from_slice(&matrix[r * DIM..(r + 1) * DIM]);
    }
    let got = g.search(&queries, 3).expect("search in slices");
    assert_agrees(
        &got,
        &gpu::search::reference(&matrix, &norms, &queries, 3),
        &matrix,
        &queries,
    );
    for (i, r) in [0u32, 2047, 2048, rows as u32 - 1].into_iter().enumerate() {
        assert_eq!(
            got[2096 + i][0].row,
            r,
            "an enrolled row finds itself first"
        );
    }
    // One 2.4 MiB segment is over the device's limit: refused, with wgpu's reason.
    let refused = GpuGallery::upload_segmented(small.clone(), &matrix, &norms, rows)
        .err()
        .expect("a segment over the buffer limit is refused");
    let message = refused.to_string();
    assert!(message.contains("uploading the gallery"), "{message}");
    let again = g
        .search(&queries[..DIM], 1)
        .expect("the device still serves");
    assert_eq!(again.len(), 1);
}
