// Exact gallery search on the GPU: squared euclidean distances from a batch of queries to
// every enrolled face, and the k nearest per query, without sending the distance matrix
// back.
//
// `scan`: workgroup (query block qb, chunk ch) reads the chunk's rows once for QB queries
// (the rows are the expensive part: 512 bytes each), every thread keeps its own sorted
// top-k per query, then the workgroup merges its threads' lists and writes k candidates
// per query for the chunk. Query blocks run along x, so workgroups that are resident
// together read the same chunk and share it through the cache.
// `merge`: one thread per query merges the candidates of every chunk into the final top-k.
//
// Distances use |q - e|^2 = |q|^2 + |e|^2 - 2 q.e with precomputed |e|^2. Ties break
// towards the lower row index, so results are deterministic.
//
// A gallery larger than one storage binding is split into segments; each segment's scan
// writes its chunks at `chunk_base`, and one merge covers all of them.
//
// Plain-Rust reference and agreement test: engine/src/gpu/search.rs.

const DIM4: u32 = 32u;  // 128-d embeddings as vec4s
const WG: u32 = 128u;   // threads per workgroup
const QB: u32 = 8u;     // queries per workgroup
const KMAX: u32 = 8u;   // largest k
const INF: f32 = 3.0e38;

struct Params {
    rows: u32,        // rows in this segment
    queries: u32,
    k: u32,
    chunk: u32,       // rows per workgroup
    row_base: u32,    // global index of this segment's first row
    chunk_base: u32,  // index of this segment's first chunk among all chunks
    chunks: u32,      // chunks over all segments
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> gallery: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> norms: array<f32>;
@group(0) @binding(3) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> cand_d: array<f32>;
@group(0) @binding(5) var<storage, read_write> cand_i: array<u32>;

var<workgroup> q_tile: array<vec4<f32>, 256>;        // QB * DIM4
var<workgroup> q_norm: array<f32, 8>;                // QB
var<workgroup> wg_d: array<f32, 1024>;               // WG * KMAX
var<workgroup> wg_i: array<u32, 1024>;

fn before(d0: f32, i0: u32, d1: f32, i1: u32) -> bool {
    return d0 < d1 || (d0 == d1 && i0 < i1);
}

@compute @workgroup_size(128, 1, 1)
fn scan(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let q0 = wid.x * QB;
    let ch = wid.y;
    let k = min(params.k, KMAX);
    let nq = min(QB, params.queries - q0);

    for (var t = lid; t < QB * DIM4; t += WG) {
        let qi = t / DIM4;
        if (qi < nq) {
            q_tile[t] = queries[(q0 + qi) * DIM4 + t % DIM4];
        } else {
            q_tile[t] = vec4<f32>(0.0);
        }
    }
    workgroupBarrier();
    if (lid < QB) {
        var s = 0.0;
        for (var c = 0u; c < DIM4; c++) {
            s += dot(q_tile[lid * DIM4 + c], q_tile[lid * DIM4 + c]);
        }
        q_norm[lid] = s;
    }
    workgroupBarrier();

    // Each thread's sorted top-k per query (distance without |q|^2, row).
    var best_d: array<f32, 64>;  // QB * KMAX
    var best_i: array<u32, 64>;
    for (var t = 0u; t < QB * KMAX; t++) {
        best_d[t] = INF;
        best_i[t] = 0xffffffffu;
    }
    let start = ch * params.chunk;
    let end = min(start + params.chunk, params.rows);
    for (var r = start + lid; r < end; r += WG) {
        var acc: array<f32, 8>;  // QB
        for (var qi = 0u; qi < QB; qi++) {
            acc[qi] = 0.0;
        }
        for (var c = 0u; c < DIM4; c++) {
            let e = gallery[r * DIM4 + c];
            for (var qi = 0u; qi < QB; qi++) {
                acc[qi] += dot(q_tile[qi * DIM4 + c], e);
            }
        }
        let row = params.row_base + r;
        for (var qi = 0u; qi < nq; qi++) {
            let s = norms[r] - 2.0 * acc[qi];
            let base = qi * KMAX;
            if (s < best_d[base + k - 1u]) {
                // Rows arrive in increasing order, so a strict < keeps the lower index.
                var p = k - 1u;
                while (p > 0u && s < best_d[base + p - 1u]) {
                    best_d[base + p] = best_d[base + p - 1u];
                    best_i[base + p] = best_i[base + p - 1u];
                    p--;
                }
                best_d[base + p] = s;
                best_i[base + p] = row;
            }
        }
    }

    // Merge the WG sorted lists of each query: thread 0 takes the smallest head k times.
    for (var qi = 0u; qi < nq; qi++) {
        for (var j = 0u; j < k; j++) {
            wg_d[lid * KMAX + j] = best_d[qi * KMAX + j];
            wg_i[lid * KMAX + j] = best_i[qi * KMAX + j];
        }
        workgroupBarrier();
        if (lid == 0u) {
            var heads: array<u32, 128>;  // WG
            for (var t = 0u; t < WG; t++) {
                heads[t] = 0u;
            }
            let out = ((q0 + qi) * params.chunks + params.chunk_base + ch) * k;
            for (var j = 0u; j < k; j++) {
                var bt = 0u;
                var bd = INF;
                var bi = 0xffffffffu;
                for (var t = 0u; t < WG; t++) {
                    if (heads[t] < k) {
                        let d = wg_d[t * KMAX + heads[t]];
                        let i = wg_i[t * KMAX + heads[t]];
                        if (before(d, i, bd, bi)) {
                            bd = d;
                            bi = i;
                            bt = t;
                        }
                    }
                }
                if (bi != 0xffffffffu) {
                    heads[bt] += 1u;
                    cand_d[out + j] = max(bd + q_norm[qi], 0.0);
                } else {
                    cand_d[out + j] = INF;
                }
                cand_i[out + j] = bi;
            }
        }
        workgroupBarrier();
    }
}

@group(0) @binding(6) var<storage, read_write> top_d: array<f32>;
@group(0) @binding(7) var<storage, read_write> top_i: array<u32>;

// One thread per query: k passes, each taking the smallest candidate that comes after the
// previous pick in (distance, row) order. Rows are unique across chunks.
@compute @workgroup_size(64, 1, 1)
fn merge(@builtin(global_invocation_id) gid: vec3<u32>) {
    let qi = gid.x;
    if (qi >= params.queries) {
        return;
    }
    let k = min(params.k, KMAX);
    let n = params.chunks * k;
    let base = qi * n;
    var last_d = -INF;
    var last_i = 0u;
    var first = true;
    for (var j = 0u; j < k; j++) {
        var bd = INF;
        var bi = 0xffffffffu;
        for (var t = 0u; t < n; t++) {
            let d = cand_d[base + t];
            let i = cand_i[base + t];
            if (i != 0xffffffffu && (first || before(last_d, last_i, d, i)) && before(d, i, bd, bi)) {
                bd = d;
                bi = i;
            }
        }
        top_d[qi * k + j] = bd;
        top_i[qi * k + j] = bi;
        last_d = bd;
        last_i = bi;
        first = false;
    }
}
