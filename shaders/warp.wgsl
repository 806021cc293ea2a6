// Fused pre-processing for a batch of decoded images: affine warp (resize, crop or
// face alignment) + anti-aliasing + normalisation + planar NCHW layout, in one pass.
//
// Inputs: every source image's RGB bytes packed into one u32 array (little-endian, 4
// bytes per word, images back to back); one `Job` per output image. Output: f32
// `[jobs, 3, out_h, out_w]`, value = (sample - mean[c]) * scale[c].
//
// Output pixel (x, y) has its centre at (x + 0.5, y + 0.5); the job's affine map takes it
// to source coordinates (source pixel centres at +0.5 too). Its value is a tent filter of
// `radius` source pixels over the source pixels there (radius 1 is bilinear
// interpolation; a shrink by s uses radius s, so a strong downscale does not alias),
// normalised by the weights, rounded to a whole grey level as an 8-bit image is. Source
// pixels outside the image count as black, or with `clamp` are left out (the edge
// repeats, as in a resize). Output pixels at or beyond (extent_w, extent_h) are black
// (a letterbox's padding). The definition is `prep::Sampler` in engine/src/prep/resample.rs.
//
// Launched on Burn's own wgpu device (Burn's `template` API), so the output buffer is
// the networks' input tensor. Every binding is a storage buffer (Burn's allocations are).
// Plain-Rust reference and agreement test: engine/src/gpu/warp.rs.

struct Params {
    out_w: u32,
    out_h: u32,
    jobs: u32,
    _pad: u32,
    mean: vec4<f32>,
    scale: vec4<f32>,
}

struct Job {
    src_offset: u32, // byte offset of the source image in `src`
    src_w: u32,
    src_h: u32,
    clamp: u32,      // 1: leave out-of-image pixels out; 0: they are black
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    tx: f32,
    ty: f32,
    radius: f32,
    extent_w: u32,
    extent_h: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Declared read_write although only `dst` is written: Burn sub-allocates small tensors
// from shared buffers, and wgpu refuses one buffer bound both read-only and read-write in
// a dispatch.
@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> jobs: array<Job>;
@group(0) @binding(2) var<storage, read_write> src: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// Source coordinates at least this far from the origin are outside any image.
const FAR: f32 = 1e6;

fn byte_at(i: u32) -> f32 {
    return f32((src[i >> 2u] >> ((i & 3u) * 8u)) & 255u);
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = gid.x;
    let y = gid.y;
    let j = gid.z;
    if (x >= params.out_w || y >= params.out_h || j >= params.jobs) {
        return;
    }
    let job = jobs[j];
    var value = vec3<f32>(0.0);
    let u = f32(x) + 0.5;
    let v = f32(y) + 0.5;
    // Continuous pixel indices: source pixel i sits at i.
    let fx = job.a * u + job.b * v + job.tx - 0.5;
    let fy = job.c * u + job.d * v + job.ty - 0.5;
    // Far outside any image (or not a number): black.
    let near = abs(fx) < FAR && abs(fy) < FAR;
    if (x < job.extent_w && y < job.extent_h && near) {
        let r = job.radius;
        var acc = vec3<f32>(0.0);
        var total = 0.0;
        let x0 = i32(ceil(fx - r));
        let x1 = i32(floor(fx + r));
        for (var iy = i32(ceil(fy - r)); iy <= i32(floor(fy + r)); iy++) {
            let wy = 1.0 - abs(f32(iy) - fy) / r;
            if (wy <= 0.0) {
                continue;
            }
            let row_in = iy >= 0 && iy < i32(job.src_h);
            for (var ix = x0; ix <= x1; ix++) {
                let wx = 1.0 - abs(f32(ix) - fx) / r;
                if (wx <= 0.0) {
                    continue;
                }
                let weight = wx * wy;
                if (row_in && ix >= 0 && ix < i32(job.src_w)) {
                    let i = job.src_offset + (u32(iy) * job.src_w + u32(ix)) * 3u;
                    acc += weight * vec3<f32>(byte_at(i), byte_at(i + 1u), byte_at(i + 2u));
                    total += weight;
                } else if (job.clamp == 0u) {
                    total += weight;
                }
            }
        }
        if (total > 0.0) {
            value = floor(acc / total + 0.5);
        }
    }
    value = (value - params.mean.xyz) * params.scale.xyz;
    let plane = params.out_w * params.out_h;
    let base = j * 3u * plane + y * params.out_w + x;
    dst[base] = value.x;
    dst[base + plane] = value.y;
    dst[base + 2u * plane] = value.z;
}
