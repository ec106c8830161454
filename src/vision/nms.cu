/* nms.cu: YOLO decoding and class-aware NMS on the GPU in four kernels, no host round trip
 * and no allocation per run. The number of candidates above the threshold is known only on
 * the device, so each kernel reads it there and takes the path it implies:
 *   1. decode: candidates above the threshold append a 64-bit key (score descending, then
 *      candidate index ascending; one atomic per warp) and leave their box, score and class
 *      at their candidate index. YOLOv5 rows are contiguous, so one thread per row reads the
 *      objectness and the warp then reads the class scores of the rows that passed together,
 *      coalesced; YOLOv8 columns are read by 32 candidates x 8 slices of the classes per block;
 *   2. sort: up to 4096 candidates, one block sorts the keys in shared memory (bitonic); above
 *      that, every block ranks its keys against all others (O(n^2), about 0.1 ms at 25,200);
 *      then the boxes are gathered in sorted order;
 *   3. the IoU bit matrix: one block per pair of 64-candidate tiles (row tile <= column tile),
 *      4 threads per row; "this later box is suppressed by me" bits, plus, for the diagonal
 *      tile, each row's "earlier boxes of my tile that suppress me" bits;
 *   4. one block resolves the greedy NMS tile by tile, in groups of tiles whose bits fit its
 *      shared memory (1,856 candidates per group on an H100): inside a tile, rounds of ballots
 *      decide every box whose earlier suppressors are all decided (a few rounds instead of one
 *      step per box); kept rows then clear the later tiles of the group, one warp per word;
 *      a later group starts from the kept rows of the earlier ones. The first top_k kept boxes,
 *      mapped to the frame, and the counts are written, and the candidate counter is reset
 *      for the next run (so no memset is queued).
 * The math is vision.h's, shared with the CPU version, so the sets are identical. */
#include <stdio.h>

#include <cuda_runtime.h>

#include "vision/vision.h"

#define TILE 64
#define FULL_WARP 0xffffffffu
#define DECODE_BLOCK 256 /* YOLOv5: one thread per row */
#define V8_SLICES 8      /* YOLOv8: warps per block, each a slice of the classes of 32 candidates */
#define SORT_BLOCK 1024
#define SORT_SMALL 4096 /* candidates one block sorts in shared memory (32 KB of keys) */
#define RANK_CHUNK 256  /* large sort: keys per block pass, each compared by 4 threads */
#define MASK_BLOCK 256  /* 4 threads per row of a tile */
#define REDUCE_BLOCK 1024
#define MAX_GROUP 32   /* tiles per group of the reduction: one warp per later word of a tile */
#define COL_STRIDE 65  /* words per (tile, later word) column of a group: 64 rows + 1 against bank conflicts */

struct zv_cuda_pp {
    int device;
    cudaStream_t stream;
    int max_tiles;      /* ceil(max_candidates / 64) */
    int group;          /* tiles per reduction group (what the device's shared memory holds) */
    size_t group_smem;  /* the reduction's dynamic shared memory for `group` */
    int mask_blocks;    /* blocks of the IoU kernel: enough to fill the device */
    int counter_stale;  /* the counter must be cleared before the next run (creation, failed launch) */
    uint64_t *keys;     /* appended candidates */
    float4 *boxes;      /* at candidate index */
    float *scores;
    int *cls;
    float4 *sboxes;     /* in sorted order */
    float *sscores;
    int *scls;
    int *n_candidates;  /* the decoders' counter; the reduction sets it back to 0 */
    uint64_t *mask;     /* max_candidates x max_tiles words, row stride = tiles of the run */
    uint64_t *in_bits;  /* per candidate: the earlier ones of its tile that suppress it */
    int *kept;          /* sorted positions of the kept boxes, in order */
    unsigned char *result;      /* zci_detect_counts, then max_detections zci_detection */
    unsigned char *host_result; /* pinned copy of result */
    int last_top_k; /* detections the last run may have written; -1 before the first run */
    void *frame_buf; /* zci_detect's staging of host frames */
    size_t frame_cap;
};

static zci_status cuda_fail(cudaError_t e, const char *where, const char *what)
{
    return zci_error(e == cudaErrorMemoryAllocation ? ZCI_OUT_OF_MEMORY : ZCI_DEVICE_ERROR, "%s: %s: %s", where, what,
                     cudaGetErrorString(e));
}

#define ZV_CUDA(call, what)                                                                                           \
    do {                                                                                                              \
        cudaError_t zv_e_ = (call);                                                                                   \
        if (zv_e_ != cudaSuccess) return cuda_fail(zv_e_, where, what);                                               \
    } while (0)

/* Makes pp's device current for the scope and restores the caller's afterwards. */
struct device_scope {
    int saved = -1;
    cudaError_t err = cudaSuccess;
    explicit device_scope(int device)
    {
        err = cudaGetDevice(&saved);
        if (err == cudaSuccess && saved != device) err = cudaSetDevice(device);
        else saved = -1;
    }
    ~device_scope()
    {
        if (saved >= 0) cudaSetDevice(saved);
    }
};

/* ---------------------------------------------------------------- decoding */

/* The best class so far as (value, class), class -1 = none yet: the first of the highest
 * values, NaNs skipped. zv_decode rejects a candidate whose first class score is NaN; the
 * callers check that apart, so the rest gives zv_decode's class whatever the order in
 * which partial results meet. */
__device__ __forceinline__ void best_take(float v, int c, float *bv, int *bc)
{
    if (v > *bv || (*bc < 0 && v == v)) {
        *bv = v;
        *bc = c;
    }
}

__device__ __forceinline__ void best_merge(float ov, int oc, float *bv, int *bc)
{
    if (oc >= 0 && (*bc < 0 || ov > *bv || (ov == *bv && oc < *bc))) {
        *bv = ov;
        *bc = oc;
    }
}

/* Appends each lane's candidate i, if valid: one atomic per warp (the order of the warps does
 * not matter: the sort orders by key). All 32 lanes call it. */
__device__ __forceinline__ void append(int valid, int i, const float box[4], float s, int c, int bits, uint64_t *keys,
                                       float4 *boxes, float *scores, int *cls, int *n_candidates)
{
    int lane = threadIdx.x & 31;
    unsigned m = __ballot_sync(FULL_WARP, valid);
    if (!m) return;
    int leader = __ffs(m) - 1, base = 0;
    if (lane == leader) base = atomicAdd(n_candidates, __popc(m));
    base = __shfl_sync(FULL_WARP, base, leader);
    if (!valid) return;
    keys[base + __popc(m & ((1u << lane) - 1))] = zv_sort_key(s, i, bits);
    boxes[i] = make_float4(box[0], box[1], box[2], box[3]);
    scores[i] = s;
    cls[i] = c;
}

/* YOLOv5, rows of (cx, cy, w, h, objectness, classes): a thread per row reads the objectness;
 * the rows above the threshold (a few percent in practice) then have their class scores read
 * by the whole warp, 32 consecutive values at a time. */
__global__ void __launch_bounds__(DECODE_BLOCK)
    decode_v5_kernel(const void *data, zv_yolo y, float thr, int bits, uint64_t *keys, float4 *boxes, float *scores,
                     int *cls, int *n_candidates)
{
    int i = blockIdx.x * DECODE_BLOCK + threadIdx.x, lane = threadIdx.x & 31;
    size_t nattr = (size_t)y.nattr;
    float obj = 0.0f;
    if (i < y.n) obj = zv_load(data, y.half, (size_t)i * nattr + 4);
    unsigned pending = __ballot_sync(FULL_WARP, i < y.n && obj > thr);
    int valid = 0, my_cls = 0;
    float my_score = 0.0f, box[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    while (pending) { /* the same on every lane */
        int b = __ffs(pending) - 1;
        pending &= pending - 1;
        size_t row = (size_t)(i - lane + b) * nattr;
        float bv = 0.0f;
        int bc = -1, first_nan = 0;
        for (int c = lane; c < y.nc; c += 32) {
            float v = zv_load(data, y.half, row + 5 + (size_t)c);
            if (c == 0) first_nan = v != v;
            best_take(v, c, &bv, &bc);
        }
        for (int off = 16; off; off >>= 1) {
            float ov = __shfl_xor_sync(FULL_WARP, bv, off);
            int oc = __shfl_xor_sync(FULL_WARP, bc, off);
            best_merge(ov, oc, &bv, &bc);
        }
        first_nan = __shfl_sync(FULL_WARP, first_nan, 0);
        if (lane == b && !first_nan) {
            float s = ZV_MUL(obj, bv);
            if (s > thr) {
                valid = 1;
                my_score = s;
                my_cls = bc;
                zv_decode_box(data, y.half, row, 1, box);
            }
        }
    }
    append(valid, i, box, my_score, my_cls, bits, keys, boxes, scores, cls, n_candidates);
}

/* YOLOv8, columns of (cx, cy, w, h, classes): lanes are 32 consecutive candidates (coalesced),
 * the block's warps slices of the classes; warp 0 merges the slices and appends. */
__global__ void __launch_bounds__(32 * V8_SLICES)
    decode_v8_kernel(const void *data, zv_yolo y, float thr, int bits, uint64_t *keys, float4 *boxes, float *scores,
                     int *cls, int *n_candidates)
{
    __shared__ float part_v[V8_SLICES][32];
    __shared__ int part_c[V8_SLICES][32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, i = blockIdx.x * 32 + lane;
    size_t n = (size_t)y.n;
    float bv = 0.0f;
    int bc = -1;
    if (i < y.n)
        for (int c = warp; c < y.nc; c += V8_SLICES)
            best_take(zv_load(data, y.half, (size_t)(4 + c) * n + (size_t)i), c, &bv, &bc);
    part_v[warp][lane] = bv;
    part_c[warp][lane] = bc;
    __syncthreads();
    if (warp != 0) return; /* no barrier follows */
    for (int w = 1; w < V8_SLICES; w++) best_merge(part_v[w][lane], part_c[w][lane], &bv, &bc);
    int valid = 0;
    float box[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (i < y.n) {
        float first = zv_load(data, y.half, 4 * n + (size_t)i);
        if (first == first && bv > thr) {
            valid = 1;
            zv_decode_box(data, y.half, (size_t)i, n, box);
        }
    }
    append(valid, i, box, bv, bc, bits, keys, boxes, scores, cls, n_candidates);
}

/* ---------------------------------------------------------------- sorting */

__device__ __forceinline__ void gather(int rank, uint64_t key, uint64_t index_mask, const float4 *boxes,
                                       const float *scores, const int *cls, float4 *sboxes, float *sscores, int *scls)
{
    int i = (int)(key & index_mask);
    sboxes[rank] = boxes[i];
    sscores[rank] = scores[i];
    scls[rank] = cls[i];
}

/* Sorts the appended keys (all distinct) and gathers the candidates in that order. The branch
 * on n is the same for the whole grid. */
__global__ void __launch_bounds__(SORT_BLOCK)
    sort_kernel(const uint64_t *keys, const float4 *boxes, const float *scores, const int *cls,
                const int *n_candidates, int bits, float4 *sboxes, float *sscores, int *scls)
{
    __shared__ uint64_t sk[SORT_SMALL];
    __shared__ int rank_sum[RANK_CHUNK];
    int n = *n_candidates, t = threadIdx.x;
    uint64_t index_mask = (1ull << bits) - 1;
    if (n <= SORT_SMALL) {
        if (blockIdx.x != 0) return; /* the whole block leaves */
        int p = 1;
        while (p < n) p <<= 1;
        for (int k = t; k < p; k += SORT_BLOCK) sk[k] = k < n ? keys[k] : ~0ull; /* padding sorts last */
        __syncthreads();
        for (int k = 2; k <= p; k <<= 1)
            for (int j = k >> 1; j > 0; j >>= 1) {
                for (int q = t; q < p / 2; q += SORT_BLOCK) {
                    int a = 2 * q - (q & (j - 1)), b = a + j; /* a has bit j clear */
                    uint64_t x = sk[a], z = sk[b];
                    if ((x > z) == ((a & k) == 0)) {
                        sk[a] = z;
                        sk[b] = x;
                    }
                }
                __syncthreads();
            }
        for (int r = t; r < n; r += SORT_BLOCK) gather(r, sk[r], index_mask, boxes, scores, cls, sboxes, sscores, scls);
        return;
    }
    /* each pass ranks RANK_CHUNK keys; thread t compares key t % RANK_CHUNK with a quarter of
     * every tile of SORT_BLOCK keys. The loops are the same for the whole block. */
    int e_off = t % RANK_CHUNK, part = t / RANK_CHUNK;
    for (int base = blockIdx.x * RANK_CHUNK; base < n; base += gridDim.x * RANK_CHUNK) {
        int e = base + e_off, rank = 0;
        uint64_t k = e < n ? keys[e] : ~0ull;
        if (t < RANK_CHUNK) rank_sum[t] = 0;
        for (int t0 = 0; t0 < n; t0 += SORT_BLOCK) {
            __syncthreads();
            sk[t] = t0 + t < n ? keys[t0 + t] : ~0ull;
            __syncthreads();
            int j0 = part * RANK_CHUNK, j1 = min(j0 + RANK_CHUNK, n - t0);
#pragma unroll 8
            for (int j = j0; j < j1; j++) rank += sk[j] < k;
        }
        atomicAdd(&rank_sum[e_off], rank);
        __syncthreads();
        if (t < RANK_CHUNK && e < n) gather(rank_sum[t], k, index_mask, boxes, scores, cls, sboxes, sscores, scls);
        __syncthreads(); /* rank_sum is cleared by the next pass */
    }
}

/* ---------------------------------------------------------------- the IoU bit matrix */

/* Pair p of the upper triangle of tiles x tiles, row-major: row tile *rt, column tile *ct >= *rt.
 * Advances from (*rt, *ct) by `step` pairs; *rt == tiles when past the end. */
__device__ __forceinline__ void advance_pair(int tiles, int step, int *rt, int *ct)
{
    *ct += step;
    while (*rt < tiles && *ct >= tiles) { /* the rest continues on the next row, at its diagonal */
        int over = *ct - tiles;
        ++*rt;
        *ct = *rt + over;
    }
}

__global__ void __launch_bounds__(MASK_BLOCK)
    mask_kernel(const float4 *sboxes, const int *scls, const int *n_candidates, float iou, int agnostic,
                uint64_t *mask, uint64_t *in_bits)
{
    __shared__ float4 col_box[TILE];
    __shared__ int col_cls[TILE];
    int n = *n_candidates, tiles = (n + TILE - 1) / TILE, t = threadIdx.x;
    int rl = t >> 2, part = t & 3; /* row of the tile, quarter of the columns */
    int rt = 0, ct = 0;
    advance_pair(tiles, blockIdx.x, &rt, &ct);
    /* (rt, ct) is the same for the whole block, so the barriers are safe */
    for (; rt < tiles; advance_pair(tiles, gridDim.x, &rt, &ct)) {
        __syncthreads();
        if (t < TILE && ct * TILE + t < n) {
            col_box[t] = sboxes[ct * TILE + t];
            col_cls[t] = scls[ct * TILE + t];
        }
        __syncthreads();
        int row = rt * TILE + rl, ncol = min(TILE, n - ct * TILE);
        uint64_t out = 0, in = 0;
        if (row < n) {
            float4 a = sboxes[row];
            int ac = scls[row], j1 = min(part * 16 + 16, ncol);
            for (int j = part * 16; j < j1; j++) {
                if (!agnostic && col_cls[j] != ac) continue;
                float4 b = col_box[j];
                if (rt != ct || j > rl) { /* a later box: does this row suppress it? */
                    if (zv_suppresses(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, iou)) out |= 1ull << j;
                } else if (j < rl) { /* an earlier box of the same tile: does it suppress this row? */
                    if (zv_suppresses(b.x, b.y, b.z, b.w, a.x, a.y, a.z, a.w, iou)) in |= 1ull << j;
                }
            }
        }
        /* the row's four threads are consecutive lanes with disjoint bits */
        out |= __shfl_xor_sync(FULL_WARP, out, 1);
        out |= __shfl_xor_sync(FULL_WARP, out, 2);
        in |= __shfl_xor_sync(FULL_WARP, in, 1);
        in |= __shfl_xor_sync(FULL_WARP, in, 2);
        if (part == 0 && row < n) {
            mask[(size_t)row * (size_t)tiles + (size_t)ct] = out;
            if (rt == ct) in_bits[row] = in;
        }
    }
}

/* ---------------------------------------------------------------- the greedy pass */

/* A group of gc tiles keeps, for each tile tl and each later tile wl of the group, the 64
 * rows' words of wl as one column of COL_STRIDE words: the offset of column (tl, wl > tl). */
__host__ __device__ static inline int group_columns(int gc) { return gc * (gc - 1) / 2; }

__device__ __forceinline__ int column_at(int gc, int tl, int wl)
{
    return (tl * (gc - 1) - tl * (tl - 1) / 2 + (wl - tl - 1)) * COL_STRIDE;
}

static size_t group_smem_bytes(int group)
{
    return sizeof(uint64_t) * ((size_t)COL_STRIDE * (size_t)group_columns(group) + (size_t)TILE * group + group);
}

__device__ __forceinline__ uint64_t warp_or64(uint64_t v)
{
#if __CUDA_ARCH__ >= 800
    unsigned lo = __reduce_or_sync(FULL_WARP, (unsigned)v), hi = __reduce_or_sync(FULL_WARP, (unsigned)(v >> 32));
    return (uint64_t)hi << 32 | lo;
#else
    for (int off = 16; off; off >>= 1) v |= __shfl_xor_sync(FULL_WARP, v, off);
    return v;
#endif
}

/* Warp 0: decides tile t (tl of the group) from the bits that earlier tiles removed and each
 * row's in-tile suppressors, appends its kept rows to `kept` and publishes them. A box is kept
 * when all its earlier suppressors are decided and none is kept, removed when one of them is
 * kept: each round decides at least the first undecided box, so this is the greedy order's
 * result, in as many rounds as the longest chain of suppressions in the tile. */
__device__ __forceinline__ void resolve_tile(int t, int tl, int n, const uint64_t *gin, const uint64_t *removed,
                                             int *kept, int *s_kept, uint64_t *s_keep)
{
    int lane = threadIdx.x & 31, rows = min(TILE, n - t * TILE);
    uint64_t valid = rows == TILE ? ~0ull : (1ull << rows) - 1;
    uint64_t undecided = ~removed[tl] & valid, keep = 0;
    uint64_t in0 = lane < rows ? gin[tl * TILE + lane] : 0;
    uint64_t in1 = lane + 32 < rows ? gin[tl * TILE + lane + 32] : 0;
    while (undecided) { /* the same on every lane */
        int u0 = (int)((undecided >> lane) & 1), u1 = (int)((undecided >> (lane + 32)) & 1);
        uint64_t open = keep | undecided;
        uint64_t k = (uint64_t)__ballot_sync(FULL_WARP, u0 && !(in0 & open)) |
                     (uint64_t)__ballot_sync(FULL_WARP, u1 && !(in1 & open)) << 32;
        uint64_t r = (uint64_t)__ballot_sync(FULL_WARP, u0 && (in0 & keep)) |
                     (uint64_t)__ballot_sync(FULL_WARP, u1 && (in1 & keep)) << 32;
        keep |= k;
        undecided &= ~(k | r);
    }
    int base = *s_kept;
    if ((keep >> lane) & 1) kept[base + __popcll(keep & ((1ull << lane) - 1))] = t * TILE + lane;
    if ((keep >> (lane + 32)) & 1) kept[base + __popcll(keep & ((1ull << (lane + 32)) - 1))] = t * TILE + lane + 32;
    __syncwarp(); /* every lane has read *s_kept */
    if (lane == 0) {
        *s_keep = keep;
        *s_kept = base + __popcll(keep);
    }
}

/* All threads: the group's words that the rows kept before it (kept[0 .. before)) removed. */
__device__ __forceinline__ void or_earlier(const uint64_t *mask, const int *kept, int before, int tiles, int g0,
                                           int gc, uint64_t *removed)
{
    int parts = REDUCE_BLOCK / gc, t = threadIdx.x;
    if (t >= parts * gc) return;
    const uint64_t *col = mask + g0 + t % gc;
    uint64_t acc = 0;
    int k = t / gc;
    for (; k + 7 * parts < before; k += 8 * parts) { /* 8 loads in flight */
        uint64_t v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) v[u] = col[(size_t)kept[k + u * parts] * (size_t)tiles];
#pragma unroll
        for (int u = 0; u < 8; u++) acc |= v[u];
    }
    for (; k < before; k += parts) acc |= col[(size_t)kept[k] * (size_t)tiles];
    if (acc) atomicOr((unsigned long long *)&removed[t % gc], (unsigned long long)acc);
}

/* All threads: the group's own words (row tile tl, later word wl) into shared columns, and the
 * in-tile bits of its rows. */
__device__ __forceinline__ void load_group(const uint64_t *mask, const uint64_t *in_bits, int tiles, int g0, int gc,
                                           int rows, uint64_t *gmask, uint64_t *gin)
{
    int total = rows * gc, t = threadIdx.x;
    size_t first = (size_t)g0 * TILE;
    for (int base = t; base < total; base += 4 * REDUCE_BLOCK) {
        uint64_t v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) { /* loads first, so that four are in flight */
            int idx = base + u * REDUCE_BLOCK, rl = idx / gc, wl = idx - rl * gc;
            v[u] = idx < total && wl > rl / TILE ? mask[(first + (size_t)rl) * (size_t)tiles + (size_t)(g0 + wl)] : 0;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = base + u * REDUCE_BLOCK, rl = idx / gc, wl = idx - rl * gc;
            if (idx < total && wl > rl / TILE) gmask[column_at(gc, rl / TILE, wl) + rl % TILE] = v[u];
        }
    }
    for (int rl = t; rl < rows; rl += REDUCE_BLOCK) gin[rl] = in_bits[first + (size_t)rl];
}

__global__ void __launch_bounds__(REDUCE_BLOCK)
    reduce_kernel(const uint64_t *mask, const uint64_t *in_bits, int *n_candidates, const float4 *sboxes,
                  const float *sscores, const int *scls, int *kept, int group, int top_k, zv_map map,
                  unsigned char *result)
{
    extern __shared__ uint64_t smem[];
    __shared__ int s_n, s_kept;
    __shared__ uint64_t s_keep;
    int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    if (t == 0) {
        s_n = *n_candidates;
        s_kept = 0;
    }
    __syncthreads();
    int n = s_n, tiles = (n + TILE - 1) / TILE;
    uint64_t *gmask = smem, *gin = gmask + (size_t)COL_STRIDE * group_columns(group), *removed = gin + TILE * group;
    /* every loop bound below is the same for the whole block, so the barriers are safe */
    for (int g0 = 0; g0 < tiles; g0 += group) {
        int gc = min(group, tiles - g0), rows = min(n - g0 * TILE, gc * TILE), before = s_kept;
        for (int w = t; w < gc; w += REDUCE_BLOCK) removed[w] = 0;
        __syncthreads();
        if (before > 0) or_earlier(mask, kept, before, tiles, g0, gc, removed);
        load_group(mask, in_bits, tiles, g0, gc, rows, gmask, gin);
        __syncthreads();
        for (int tl = 0; tl < gc; tl++) {
            if (warp == 0) resolve_tile(g0 + tl, tl, n, gin, removed, kept, &s_kept, &s_keep);
            __syncthreads();
            uint64_t keep = s_keep;
            int wl = tl + 1 + warp; /* warp w clears word wl of the group with the tile's kept rows */
            if (keep && wl < gc) {
                const uint64_t *col = gmask + column_at(gc, tl, wl);
                uint64_t v = ((keep >> lane) & 1 ? col[lane] : 0) | ((keep >> (lane + 32)) & 1 ? col[lane + 32] : 0);
                v = warp_or64(v);
                if (lane == 0) removed[wl] |= v;
            }
            __syncthreads();
        }
    }
    int n_kept = s_kept, count = min(n_kept, top_k);
    zci_detection *dets = (zci_detection *)(result + sizeof(zci_detect_counts));
    for (int k = t; k < count; k += REDUCE_BLOCK) {
        int r = kept[k];
        float4 b = sboxes[r];
        float box[4] = {b.x, b.y, b.z, b.w};
        zv_emit(&map, box, sscores[r], scls[r], &dets[k]);
    }
    if (t == 0) {
        zci_detect_counts *c = (zci_detect_counts *)result;
        c->count = count;
        c->candidates = n;
        c->after_nms = n_kept;
        c->reserved = 0;
        *n_candidates = 0; /* every kernel of this run has read it */
    }
}

/* ---------------------------------------------------------------- host side */

static void free_state(zv_cuda_pp *c)
{
    if (c->stream) cudaStreamSynchronize(c->stream);
    void *dev[] = {c->keys,    c->boxes, c->scores,  c->cls,  c->sboxes, c->sscores,      c->scls,
                   c->mask,    c->in_bits, c->kept,  c->result, c->n_candidates, c->frame_buf};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (c->host_result) cudaFreeHost(c->host_result);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

template <typename T> static cudaError_t alloc_n(T **p, size_t n) { return cudaMalloc((void **)p, n * sizeof(T)); }

/* The largest group of tiles (at most MAX_GROUP) whose shared memory the device gives one
 * block, and of that what a run of this postprocessor can use. The kernel's limit is set to the
 * device's largest group, the same for every postprocessor on the device. */
static zci_status choose_group(zv_cuda_pp *c, const char *where)
{
    int optin = 0, sms = 0;
    ZV_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device),
            "querying shared memory");
    ZV_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c->device), "querying the SM count");
    cudaFuncAttributes fa;
    ZV_CUDA(cudaFuncGetAttributes(&fa, reduce_kernel), "querying the NMS kernel");
    int g = MAX_GROUP;
    while (g > 1 && group_smem_bytes(g) + fa.sharedSizeBytes > (size_t)optin) g--;
    ZV_CUDA(cudaFuncSetAttribute(reduce_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)group_smem_bytes(g)),
            "sizing the NMS kernel's shared memory");
    c->group = c->max_tiles < g ? c->max_tiles : g;
    c->group_smem = group_smem_bytes(c->group);
    /* 8 blocks of 256 threads fill an SM; more pairs than that loop */
    long long pairs = (long long)c->max_tiles * (c->max_tiles + 1) / 2, fill = 8LL * (sms > 0 ? sms : 1);
    c->mask_blocks = (int)(pairs < fill ? pairs : fill);
    return ZCI_OK;
}

static zci_status create_state(zci_postprocessor *pp, zv_cuda_pp *c)
{
    const char *where = "zci_postprocessor_create";
    size_t n = (size_t)pp->max_candidates;
    c->max_tiles = (int)((n + TILE - 1) / TILE);
    c->last_top_k = -1;
    c->counter_stale = 1;
    ZV_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "creating its stream");
    ZCI_TRY(choose_group(c, where));
    ZV_CUDA(alloc_n(&c->keys, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->boxes, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->scores, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->cls, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->sboxes, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->sscores, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->scls, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->in_bits, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->kept, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->n_candidates, 1), "allocating a counter");
    ZV_CUDA(alloc_n(&c->mask, n * (size_t)c->max_tiles), "allocating the NMS bit matrix");
    size_t result_bytes = sizeof(zci_detect_counts) + (size_t)pp->max_detections * sizeof(zci_detection);
    ZV_CUDA(alloc_n((unsigned char **)&c->result, result_bytes), "allocating results");
    ZV_CUDA(cudaMallocHost((void **)&c->host_result, result_bytes), "allocating pinned results");
    return ZCI_OK;
}

zci_status zv_cuda_pp_create(zci_postprocessor *pp)
{
    const char *where = "zci_postprocessor_create";
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        return zci_error(ZCI_NO_DEVICE, "%s: no usable CUDA device (%s)", where,
                         e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    zv_cuda_pp *c = (zv_cuda_pp *)zci_calloc(1, sizeof *c, "CUDA postprocessor");
    if (!c) return ZCI_OUT_OF_MEMORY;
    e = cudaGetDevice(&c->device);
    zci_status st = e != cudaSuccess ? cuda_fail(e, where, "querying the current device") : create_state(pp, c);
    if (st) {
        free_state(c);
        return st;
    }
    pp->cuda = c;
    return ZCI_OK;
}

void zv_cuda_pp_destroy(zci_postprocessor *pp)
{
    if (!pp->cuda) return;
    device_scope scope(pp->cuda->device);
    free_state(pp->cuda);
    pp->cuda = NULL;
}

void *zv_cuda_pp_stream(zci_postprocessor *pp, void *stream)
{
    return stream || !pp->cuda ? stream : (void *)pp->cuda->stream;
}

/* Queues the four kernels. A launch that fails leaves the counter possibly set: the next run
 * clears it first. */
static zci_status launch(zv_cuda_pp *c, const void *img, const zv_yolo *y, const zci_postprocess_params *params,
                         int top_k, const zci_letterbox *transform, cudaStream_t s)
{
    const char *where = "zci_postprocess_cuda";
    int bits = zv_index_bits(y->n);
    if (c->counter_stale) {
        ZV_CUDA(cudaMemsetAsync(c->n_candidates, 0, sizeof(int), s), "clearing the counter");
        c->counter_stale = 0;
    }
    c->counter_stale = 1;
    float thr = params->score_threshold;
    if (y->layout == ZCI_YOLO_V5)
        decode_v5_kernel<<<(y->n + DECODE_BLOCK - 1) / DECODE_BLOCK, DECODE_BLOCK, 0, s>>>(
            img, *y, thr, bits, c->keys, c->boxes, c->scores, c->cls, c->n_candidates);
    else
        decode_v8_kernel<<<(y->n + 31) / 32, 32 * V8_SLICES, 0, s>>>(img, *y, thr, bits, c->keys, c->boxes, c->scores,
                                                                       c->cls, c->n_candidates);
    ZV_CUDA(cudaGetLastError(), "launching the decoder");
    sort_kernel<<<(y->n + RANK_CHUNK - 1) / RANK_CHUNK, SORT_BLOCK, 0, s>>>(
        c->keys, c->boxes, c->scores, c->cls, c->n_candidates, bits, c->sboxes, c->sscores, c->scls);
    ZV_CUDA(cudaGetLastError(), "launching the sort");
    int tiles = (y->n + TILE - 1) / TILE;
    long long pairs = (long long)tiles * (tiles + 1) / 2;
    int mblocks = pairs < c->mask_blocks ? (int)pairs : c->mask_blocks;
    mask_kernel<<<mblocks, MASK_BLOCK, 0, s>>>(c->sboxes, c->scls, c->n_candidates, params->iou_threshold,
                                               params->class_agnostic, c->mask, c->in_bits);
    ZV_CUDA(cudaGetLastError(), "launching the IoU matrix");
    reduce_kernel<<<1, REDUCE_BLOCK, c->group_smem, s>>>(c->mask, c->in_bits, c->n_candidates, c->sboxes, c->sscores,
                                                         c->scls, c->kept, c->group, top_k, zv_map_from(transform),
                                                         c->result);
    ZV_CUDA(cudaGetLastError(), "launching the NMS pass");
    c->counter_stale = 0;
    return ZCI_OK;
}

zci_status zci_postprocess_cuda(zci_postprocessor *pp, const void *output, const zci_tensor_info *info,
                                int batch_index, const zci_postprocess_params *params, const zci_letterbox *transform,
                                void *stream)
{
    const char *where = "zci_postprocess_cuda";
    if (!pp || !output) return zci_error(ZCI_INVALID_ARGUMENT, "%s: postprocessor or output is NULL", where);
    zv_cuda_pp *c = pp->cuda;
    if (pp->device != ZCI_DEVICE_CUDA || !c)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: the postprocessor was created for the CPU", where);
    zv_yolo y;
    int top_k;
    ZCI_TRY(zv_parse_yolo(info, params ? params->layout : ZCI_YOLO_AUTO, &y, where));
    ZCI_TRY(zv_check_post(pp, params, &y, batch_index, &top_k, where));
    device_scope scope(c->device);
    ZV_CUDA(scope.err, "selecting the postprocessor's device");
    ZCI_TRY(zv_cuda_check_device_ptr(output, "output", where));
    cudaStream_t s = stream ? (cudaStream_t)stream : c->stream;
    const void *img = (const char *)output + (size_t)batch_index * y.image_elems * (y.half ? 2 : 4);
    ZCI_TRY(launch(c, img, &y, params, top_k, transform, s));
    c->last_top_k = top_k;
    return ZCI_OK;
}

zci_status zci_postprocessor_results(zci_postprocessor *pp, void **counts, void **dets)
{
    if (!pp || !pp->cuda)
        return zci_error(ZCI_INVALID_ARGUMENT, "zci_postprocessor_results: %s", pp ? "a CPU postprocessor" : "pp is NULL");
    if (counts) *counts = pp->cuda->result;
    if (dets) *dets = pp->cuda->result + sizeof(zci_detect_counts);
    return ZCI_OK;
}

zci_status zci_postprocessor_download(zci_postprocessor *pp, zci_detection *dets, int capacity,
                                      zci_detect_counts *counts, void *stream)
{
    const char *where = "zci_postprocessor_download";
    if (!pp || !pp->cuda)
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: %s", where, pp ? "a CPU postprocessor" : "pp is NULL");
    if (capacity < 0 || (capacity > 0 && !dets))
        return zci_error(ZCI_INVALID_ARGUMENT, "%s: dets is NULL or capacity %d is negative", where, capacity);
    zv_cuda_pp *c = pp->cuda;
    if (c->last_top_k < 0) return zci_error(ZCI_INVALID_ARGUMENT, "%s: no zci_postprocess_cuda run yet", where);
    device_scope scope(c->device);
    ZV_CUDA(scope.err, "selecting the postprocessor's device");
    cudaStream_t s = stream ? (cudaStream_t)stream : c->stream;
    size_t bytes = sizeof(zci_detect_counts) + (size_t)c->last_top_k * sizeof(zci_detection);
    ZV_CUDA(cudaMemcpyAsync(c->host_result, c->result, bytes, cudaMemcpyDeviceToHost, s), "copying the results");
    ZV_CUDA(cudaStreamSynchronize(s), "waiting for the postprocessing");
    zci_detect_counts got;
    memcpy(&got, c->host_result, sizeof got);
    int n = got.count < capacity ? got.count : capacity;
    if (n > 0) memcpy(dets, c->host_result + sizeof got, (size_t)n * sizeof(zci_detection));
    if (counts) *counts = got;
    return ZCI_OK;
}

zci_status zv_cuda_upload_frame(zci_postprocessor *pp, const zci_frame *host, zci_frame *dev, void *stream)
{
    const char *where = "zci_detect";
    if (!pp->cuda) return zci_error(ZCI_INVALID_ARGUMENT, "%s: the postprocessor was created for the CPU", where);
    ZCI_TRY(zv_check_frame(host, 0, where));
    zv_cuda_pp *c = pp->cuda;
    zci_pixel_format f = host->format;
    int np = zv_plane_count(f);
    size_t offs[3], total = 0;
    for (int k = 0; k < np; k++) {
        offs[k] = total;
        total += zci_align(zv_row_bytes(f, host->width, k) * (size_t)zv_plane_rows(f, host->height, k), 256);
    }
    device_scope scope(c->device);
    ZV_CUDA(scope.err, "selecting the postprocessor's device");
    cudaStream_t s = (cudaStream_t)stream;
    if (total > c->frame_cap) {
        /* the old staging may still be read by queued work */
        if (c->frame_buf) {
            ZV_CUDA(cudaStreamSynchronize(s), "waiting to grow the frame staging");
            cudaFree(c->frame_buf);
            c->frame_buf = NULL;
            c->frame_cap = 0;
        }
        ZV_CUDA(cudaMalloc(&c->frame_buf, total), "allocating the frame staging");
        c->frame_cap = total;
    }
    *dev = *host;
    for (int k = 0; k < np; k++) {
        size_t rb = zv_row_bytes(f, host->width, k);
        size_t pitch = host->pitch[k] ? host->pitch[k] : rb;
        unsigned char *d = (unsigned char *)c->frame_buf + offs[k];
        ZV_CUDA(cudaMemcpy2DAsync(d, rb, host->planes[k], pitch, rb, (size_t)zv_plane_rows(f, host->height, k),
                                  cudaMemcpyHostToDevice, s),
                "copying the frame");
        dev->planes[k] = d;
        dev->pitch[k] = rb;
    }
    return ZCI_OK;
}
