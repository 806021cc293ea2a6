// Fused pre-processing for a batch of decoded images: affine warp (resize, crop or
// face alignment) + anti-aliasing + normalisation + planar NCHW layout, in one pass.
//
// Inputs: every source image's RGB bytes packed into one u32 array (little-endian, 4
// bytes per word, images back to back); one `Job` per output image. Output: f32
// `[jobs, 3, out_h, out_w]`, value = (sample - mean[c]) * scale[c].
//
// Output pixel (x, y) covers the square [x, x+1) x [y, y+1); it is sampled `taps` x `taps`
// times at evenly spaced points of that square, each sample mapped through the job's
// affine map (output coordinates -> source coordinates, pixel centres at +0.5) and read
// bilinearly, black outside the source. `taps` > 1 averages a shrinking map's footprint
// so a strong downscale does not alias.
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
    taps: u32,
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    tx: f32,
    ty: f32,
    _pad0: f32,
    _pad1: f32,
}

// Declared read_write although only `dst` is written: Burn sub-allocates small tensors
// from shared buffers, and wgpu refuses one buffer bound both read-only and read-write in
// a dispatch.
@group(0) @binding(0) var<storage, read_write> params: Params;
@group(0) @binding(1) var<storage, read_write> jobs: array<Job>;
@group(0) @binding(2) var<storage, read_write> src: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn byte_at(i: u32) -> f32 {
    return f32((src[i >> 2u] >> ((i & 3u) * 8u)) & 255u);
}

fn texel(job: Job, x: i32, y: i32) -> vec3<f32> {
    if (x < 0 || y < 0 || x >= i32(job.src_w) || y >= i32(job.src_h)) {
        return vec3<f32>(0.0);
    }
    let i = job.src_offset + (u32(y) * job.src_w + u32(x)) * 3u;
    return vec3<f32>(byte_at(i), byte_at(i + 1u), byte_at(i + 2u));
}

fn bilinear(job: Job, sx: f32, sy: f32) -> vec3<f32> {
    let fx = sx - 0.5;
    let fy = sy - 0.5;
    let x0 = floor(fx);
    let y0 = floor(fy);
    let ax = fx - x0;
    let ay = fy - y0;
    let ix = i32(x0);
    let iy = i32(y0);
    let p00 = texel(job, ix, iy);
    let p01 = texel(job, ix, iy + 1);
    // Written as the reference writes it (not `mix`), so both round alike.
    let top = p00 + (texel(job, ix + 1, iy) - p00) * ax;
    let bottom = p01 + (texel(job, ix + 1, iy + 1) - p01) * ax;
    return top + (bottom - top) * ay;
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
    let n = max(job.taps, 1u);
    let step = 1.0 / f32(n);
    var acc = vec3<f32>(0.0);
    for (var ty = 0u; ty < n; ty++) {
        for (var tx = 0u; tx < n; tx++) {
            let u = f32(x) + (f32(tx) + 0.5) * step;
            let v = f32(y) + (f32(ty) + 0.5) * step;
            let sx = job.a * u + job.b * v + job.tx;
            let sy = job.c * u + job.d * v + job.ty;
            acc += bilinear(job, sx, sy);
        }
    }
    let value = (acc / f32(n * n) - params.mean.xyz) * params.scale.xyz;
    let plane = params.out_w * params.out_h;
    let base = j * 3u * plane + y * params.out_w + x;
    dst[base] = value.x;
    dst[base + plane] = value.y;
    dst[base + 2u * plane] = value.z;
}
