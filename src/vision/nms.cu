/* nms.cu: YOLO decoding and NMS on the GPU in five kernels, no host round trip and no
 * allocation per run. The number of candidates above the threshold, and how they spread over
 * the classes, are known only on the device, so each kernel reads them there.
 *
 * Class-aware NMS falls apart by class: a box is kept iff no kept, higher-ranked box of its own
 * class overlaps it above the threshold. So the candidates are put in two orders, by rank (score
 * descending, then candidate index ascending: the output's order) and class-major (class, then
 * rank: one contiguous segment per class), and the segments are resolved independently, in
 * parallel: with 80 classes the pairs to test drop about 80-fold, and one long serial greedy pass
 * (a third of a millisecond at 10,000 candidates) becomes many short ones. Class-agnostic NMS is
 * one segment, and so is class-aware NMS with more classes than fit in a 64-bit key beside the
 * rank key (its IoU tests then compare classes).
 *   1. decode: candidates above the threshold append a 64-bit key (class above the rank key when
 *      class-aware; one atomic per warp) and leave box, score and class at their candidate index.
 *      YOLOv5 rows are contiguous: a warp whose 32 rows hold a candidate (objectness above the
 *      threshold) stages those rows in shared memory with coalesced loads, and each lane takes
 *      its own row's box and scans its class scores there; YOLOv8 columns are read by 32
 *      candidates x 8 slices of the classes per block;
 *   2. chunk sort: a block per chunk of 1,024 keys sorts them (bitonic) class-major and, when
 *      that differs, by rank: the steps between keys of one warp are shuffles, only the 10 of
 *      55 across warps go through shared memory;
 *   3. rank: each candidate counts the keys below its own in every chunk (binary searches in
 *      the chunks staged in shared memory; keys are distinct): that is its class-major position
 *      and, in the rank-ordered chunks, its rank. Box, class and rank go to the class-major
 *      position, the candidate index to the rank, and the first candidate of each class appends
 *      its segment to the list of small (<= 512 candidates) or of large segments; a small one
 *      also lists its 64 x 64 tile pairs. No O(n^2) step: 25,200 keys are 25 chunks;
 *   4. pairs: a block per tile pair (those listed, then those of the large segments), 4 threads
 *      per row, writes "this later box is suppressed by me" bits, and on the diagonal each row's
 *      "earlier boxes of my tile that suppress me" bits, per class-major position and segment
 *      tile: the IoU work of a class is spread over the device, not left to one block;
 *   5. finish: a block per segment. A small one is staged in shared memory and warp 0 resolves it
 *      64 boxes at a time: rounds of ballots decide every box whose in-tile suppressors are all
 *      decided, and the tile's kept boxes clear their bits in the later words. A large one is
 *      resolved the same way in groups of tiles whose bits fit its shared memory (1,856
 *      candidates per group on an H100): kept rows clear the later tiles of the group, one warp
 *      per word, and a later group starts from the kept rows of the earlier ones. Kept boxes set
 *      a flag at their rank. The last block to finish compacts the flags in rank order (a
 *      block-wide scan), writes the first top_k kept boxes mapped to the frame and the counts,
 *      and clears the flags and counters for the next run (so no memset is queued).
 * Each kernel keeps its chains of dependent memory accesses short: at these sizes the latency
 * of a round trip to memory, not arithmetic, sets the time.
 * The math is vision.h's, shared with the CPU version, so the sets are identical. */
#include <stdio.h>

#include <cuda_runtime.h>

#include "vision/vision.h"

#define TILE 64
#define FULL_WARP 0xffffffffu
#define DECODE_BLOCK 256 /* YOLOv5: one thread per row */
#define V5_SPAN 1024     /* YOLOv5: elements of its rows a warp stages at a time, 32 per lane */
#define V8_SLICES 8      /* YOLOv8: warps per block, each a slice of the classes of 32 candidates */
#define CHUNK_LOG 10
#define CHUNK (1 << CHUNK_LOG) /* keys one block sorts */
#define SORT_BLOCK 512   /* two keys of each order per thread */
#define RANK_BLOCK 256  /* small blocks: the searches of a chunk's keys spread over many SMs */
#define SEG_MAX 512 /* the longest small segment: its bits fit in shared memory, 8 words a row */
#define SEG_WORDS (SEG_MAX / TILE)
#define SEG_STRIDE (SEG_WORDS + 1) /* words per row of a segment's matrix: the later words, then the
                                      row's in-tile suppressors (odd, against bank conflicts) */
#define SEG_BLOCK 256   /* pairs kernel: 4 threads per row of a 64 x 64 tile pair */
#define REDUCE_BLOCK 1024
#define MAX_GROUP 32   /* tiles per group of the reduction: one warp per later word of a tile */
#define COL_STRIDE 65  /* words per (tile, later word) column of a group: 64 rows + 1 against bank conflicts */

/* The device counters of a run, cleared by the finish kernel for the next one. */
enum { C_CANDIDATES, C_SMALL, C_LARGE, C_PAIRS, C_FINISHED, C_COUNT };

struct zv_cuda_pp {
    int device;
    cudaStream_t stream;
    int max_candidates;
    int max_tiles;      /* ceil(max_candidates / 64): the row stride of the segments' bit matrix */
    int group;          /* tiles per reduction group (what the device's shared memory holds) */
    size_t finish_smem; /* the finish kernel's dynamic shared memory: `group` or a small segment */
    int pair_blocks;    /* blocks of the pairs kernel, of the finish kernel: enough to fill the device */
    int finish_blocks;
    int rank_cap;       /* sorted keys the rank kernel stages in shared memory */
    int counter_stale;  /* counters and flags must be cleared before the next run (creation, failed launch) */
    uint64_t *keys;     /* appended candidates */
    uint64_t *ck1;      /* the chunks sorted by rank, whole chunks padded with ~0 */
    uint64_t *ck2;      /* the chunks sorted class-major (the same as ck1 when the key has no class) */
    float4 *boxes;      /* at candidate index */
    float *scores;
    int *cls;
    float4 *sboxes;     /* at class-major position */
    int *scls;
    int *srank;
    int *gidx;          /* the candidate index at each rank */
    int2 *segs;         /* (start, length): small segments from 0, large ones from max_candidates */
    int4 *pairs;        /* the small segments' tile pairs: (start, length, row tile, column tile) */
    int *counters;      /* C_COUNT counters */
    unsigned char *flags; /* per rank: kept; whole words up to 4 x REDUCE_BLOCK past max_candidates */
    uint64_t *mask;     /* per class-major position, max_tiles words: its bits of its segment's tiles */
    uint64_t *in_bits;  /* per class-major position: the earlier ones of its tile that suppress it */
    int *kept;          /* large segments: segment positions of their kept boxes, in order */
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

/* YOLOv8's best class so far as (value, class), class -1 = none yet: the first of the highest
 * values, NaNs skipped. zv_decode rejects a candidate whose first class score is NaN; the
 * decoder checks that apart, so the rest gives zv_decode's class whatever the order in which
 * partial results meet. */
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
 * not matter: the sort orders by key). The key holds the class above bit cshift when cshift > 0.
 * All 32 lanes call it. */
__device__ __forceinline__ void append(int valid, int i, const float box[4], float s, int c, int bits, int cshift,
                                       uint64_t *keys, float4 *boxes, float *scores, int *cls, int *n_candidates)
{
    int lane = threadIdx.x & 31;
    unsigned m = __ballot_sync(FULL_WARP, valid);
    if (!m) return;
    int leader = __ffs(m) - 1, base = 0;
    if (lane == leader) base = atomicAdd(n_candidates, __popc(m));
    base = __shfl_sync(FULL_WARP, base, leader);
    if (!valid) return;
    uint64_t key = zv_sort_key(s, i, bits);
    if (cshift) key |= (uint64_t)c << cshift;
    keys[base + __popc(m & ((1u << lane) - 1))] = key;
    boxes[i] = make_float4(box[0], box[1], box[2], box[3]);
    scores[i] = s;
    cls[i] = c;
}

/* YOLOv5, rows of (cx, cy, w, h, objectness, classes): a thread per row reads the objectness.
 * A warp with rows above the threshold then stages its rows, from the first such row to the
 * last one, in shared memory with coalesced loads, V5_SPAN elements at a time, and each lane
 * whose row passed takes its box there and scans its class scores in order, as zv_decode does. */
__global__ void __launch_bounds__(DECODE_BLOCK)
    decode_v5_kernel(const void *data, zv_yolo y, float thr, int bits, int cshift, uint64_t *keys, float4 *boxes,
                     float *scores, int *cls, int *n_candidates)
{
    __shared__ float stage[DECODE_BLOCK / 32][V5_SPAN];
    int i = blockIdx.x * DECODE_BLOCK + threadIdx.x, lane = threadIdx.x & 31;
    float *st = stage[threadIdx.x >> 5];
    size_t nattr = (size_t)y.nattr;
    float obj = 0.0f;
    if (i < y.n) obj = zv_load(data, y.half, (size_t)i * nattr + 4);
    int pass = i < y.n && obj > thr;
    unsigned pending = __ballot_sync(FULL_WARP, pass);
    int valid = 0, my_cls = 0;
    float my_score = 0.0f, box[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (pending) { /* the same on every lane */
        /* offsets from the warp's first row; rows past y.n never pass, so [lo, hi) is inside */
        size_t warp_row = (size_t)(i - lane) * nattr;
        size_t lo = (size_t)(__ffs(pending) - 1) * nattr, hi = (size_t)(32 - __clz(pending)) * nattr;
        size_t mine = (size_t)lane * nattr + 5, mine_end = mine + (size_t)y.nc, box_at = mine - 5;
        float best = 0.0f;
        int bc = 0, got_box = 0;
        for (size_t s0 = lo; s0 < hi; s0 += V5_SPAN) {
            float v[V5_SPAN / 32];
#pragma unroll
            for (int k = 0; k < V5_SPAN / 32; k++) { /* all loads in flight before the first store */
                size_t e = s0 + (size_t)(k * 32 + lane);
                v[k] = e < hi ? zv_load(data, y.half, warp_row + e) : 0.0f;
            }
#pragma unroll
            for (int k = 0; k < V5_SPAN / 32; k++) st[k * 32 + lane] = v[k];
            __syncwarp();
            if (pass && !got_box && box_at >= s0 && box_at + 4 <= s0 + V5_SPAN) { /* the same values as in memory */
                zv_decode_box(st, 0, box_at - s0, 1, box);
                got_box = 1;
            }
            if (pass) { /* offsets in the stage; c0: where class 0 is (negative: an earlier stage) */
                long long c0 = (long long)mine - (long long)s0, end = (long long)mine_end - (long long)s0;
                int ka = c0 <= 0 ? 0 : c0 >= V5_SPAN ? V5_SPAN : (int)c0;
                int kb = end <= 0 ? 0 : end >= V5_SPAN ? V5_SPAN : (int)end;
                for (int k = ka; k < kb; k++) { /* the first class, then each higher score (NaN never) */
                    float x = st[k];
                    if (k == c0 || x > best) {
                        best = x;
                        bc = (int)(k - c0);
                    }
                }
            }
            __syncwarp(); /* the stage is read before the next one overwrites it */
        }
        if (pass) {
            float s = ZV_MUL(obj, best);
            if (s > thr) {
                valid = 1;
                my_score = s;
                my_cls = bc;
                if (!got_box) zv_decode_box(data, y.half, (size_t)i * nattr, 1, box); /* it straddled two stages */
            }
        }
    }
    append(valid, i, box, my_score, my_cls, bits, cshift, keys, boxes, scores, cls, n_candidates);
}

/* YOLOv8, columns of (cx, cy, w, h, classes): lanes are 32 consecutive candidates (coalesced),
 * the block's warps slices of the classes; warp 0 merges the slices and appends. */
__global__ void __launch_bounds__(32 * V8_SLICES)
    decode_v8_kernel(const void *data, zv_yolo y, float thr, int bits, int cshift, uint64_t *keys, float4 *boxes,
                     float *scores, int *cls, int *n_candidates)
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
    append(valid, i, box, bv, bc, bits, cshift, keys, boxes, scores, cls, n_candidates);
}

/* ---------------------------------------------------------------- the two orders */

/* Compare-exchange of two keys of a bitonic step: *lo keeps the smaller when `up`. */
__device__ __forceinline__ void order_pair(uint64_t *lo, uint64_t *hi, bool up)
{
    uint64_t a = *lo, b = *hi;
    if ((a > b) == up) {
        *lo = b;
        *hi = a;
    }
}

/* One step of a bitonic sort whose partner is in the same warp (j < 32): the lane with bit j
 * clear keeps the smaller key when `up`, its partner the larger. */
__device__ __forceinline__ uint64_t order_lanes(uint64_t x, int j, bool up)
{
    uint64_t y = __shfl_xor_sync(FULL_WARP, x, j);
    bool low = ((threadIdx.x & 31) & j) == 0;
    return (low == up) == (x < y) ? x : y;
}

/* Sorts chunk blockIdx.x of the appended keys class-major into ck2 and, when the keys hold a
 * class (two_orders), by rank (the key without its class bits: k1_mask) into ck1. Whole chunks
 * are written, padded with ~0, which sorts after every key: no candidate's key is ~0 (its score
 * is positive, so the rank key's top bit is clear). Thread t holds positions p0 = 64 warp + lane
 * and p1 = p0 + 32 in registers: the steps between positions less than 64 apart are shuffles or
 * in-thread, without a barrier; the others (10 of 55) exchange in shared memory. */
__global__ void __launch_bounds__(SORT_BLOCK)
    chunk_sort_kernel(const uint64_t *keys, const int *counters, int two_orders, uint64_t k1_mask, uint64_t *ck1,
                      uint64_t *ck2)
{
    __shared__ uint64_t s2[CHUNK], s1[CHUNK];
    int n = counters[C_CANDIDATES], c0 = blockIdx.x * CHUNK, t = threadIdx.x;
    if (c0 >= n) return; /* the whole block leaves */
    int count = min(CHUNK, n - c0), p0 = (t >> 5) * 64 + (t & 31), p1 = p0 + 32;
    uint64_t x0 = p0 < count ? keys[c0 + p0] : ~0ull, x1 = p1 < count ? keys[c0 + p1] : ~0ull;
    uint64_t y0 = p0 < count ? x0 & k1_mask : ~0ull, y1 = p1 < count ? x1 & k1_mask : ~0ull;
    for (int k = 2; k <= CHUNK; k <<= 1) {
        int j = k >> 1;
        if (j >= 64) { /* the steps across warps, in shared memory (the same for the whole block) */
            s2[p0] = x0;
            s2[p1] = x1;
            s1[p0] = y0;
            s1[p1] = y1;
            for (; j >= 64; j >>= 1) {
                __syncthreads();
                int a = 2 * t - (t & (j - 1)), b = a + j; /* a has bit j clear */
                bool up = (a & k) == 0;
                order_pair(&s2[a], &s2[b], up);
                if (two_orders) order_pair(&s1[a], &s1[b], up);
            }
            __syncthreads();
            x0 = s2[p0];
            x1 = s2[p1];
            y0 = s1[p0];
            y1 = s1[p1];
        }
        bool up0 = (p0 & k) == 0, up1 = (p1 & k) == 0;
        if (j == 32) { /* p0 and p1 are partners */
            order_pair(&x0, &x1, up0);
            if (two_orders) order_pair(&y0, &y1, up0);
            j = 16;
        }
        for (; j > 0; j >>= 1) {
            x0 = order_lanes(x0, j, up0);
            x1 = order_lanes(x1, j, up1);
            if (two_orders) {
                y0 = order_lanes(y0, j, up0);
                y1 = order_lanes(y1, j, up1);
            }
        }
    }
    ck2[(size_t)c0 + p0] = x0;
    ck2[(size_t)c0 + p1] = x1;
    if (two_orders) {
        ck1[(size_t)c0 + p0] = y0;
        ck1[(size_t)c0 + p1] = y1;
    }
}

/* The keys of one sorted chunk (CHUNK keys, padded with ~0) below `key`. */
__device__ __forceinline__ int below_in_chunk(const uint64_t *c, uint64_t key)
{
    int p = 0;
#pragma unroll
    for (int lg = CHUNK_LOG - 1; lg >= 0; lg--)
        if (c[p + (1 << lg) - 1] < key) p += 1 << lg;
    return p + (c[p] < key); /* p <= CHUNK - 1: its own key is still to be compared */
}

/* The keys below `key` in all the sorted chunks: a binary search in each, four chunks in step so
 * that their loads overlap. */
__device__ __forceinline__ int count_below(const uint64_t *ck, int chunks, uint64_t key)
{
    int total = 0, d = 0;
    for (; d + 4 <= chunks; d += 4) {
        const uint64_t *c0 = ck + d * CHUNK, *c1 = c0 + CHUNK, *c2 = c1 + CHUNK, *c3 = c2 + CHUNK;
        int p0 = 0, p1 = 0, p2 = 0, p3 = 0;
#pragma unroll
        for (int lg = CHUNK_LOG - 1; lg >= 0; lg--) {
            int step = 1 << lg;
            if (c0[p0 + step - 1] < key) p0 += step;
            if (c1[p1 + step - 1] < key) p1 += step;
            if (c2[p2 + step - 1] < key) p2 += step;
            if (c3[p3 + step - 1] < key) p3 += step;
        }
        total += p0 + (c0[p0] < key) + p1 + (c1[p1] < key) + p2 + (c2[p2] < key) + p3 + (c3[p3] < key);
    }
    for (; d < chunks; d++) total += below_in_chunk(ck + d * CHUNK, key);
    return total;
}

/* All threads: the sorted chunks (`keys` keys), into shared memory when they fit (`cap` keys), else
 * searched where they are. A search in global memory waits on L2 at every step. */
__device__ __forceinline__ const uint64_t *stage_chunks(const uint64_t *ck, int keys, int cap, uint64_t *smem)
{
    if (keys > cap) return ck;
    __syncthreads(); /* the previous order is searched */
    for (int k0 = 0; k0 < keys; k0 += 8 * RANK_BLOCK) {
        uint64_t v[8];
#pragma unroll
        for (int u = 0; u < 8; u++) { /* eight loads in flight */
            int k = k0 + u * RANK_BLOCK + (int)threadIdx.x;
            v[u] = k < keys ? ck[k] : 0;
        }
#pragma unroll
        for (int u = 0; u < 8; u++) {
            int k = k0 + u * RANK_BLOCK + (int)threadIdx.x;
            if (k < keys) smem[k] = v[u];
        }
    }
    __syncthreads();
    return smem;
}

/* One thread per class-major key (chunk position e): its class-major position and its rank,
 * searched in the chunks staged in shared memory; it moves box, class and rank to the first and
 * its candidate index to the second. The first candidate of a class (of the whole set without
 * class bits) appends the segment: small ones from segs[0], with an entry (start, length, row
 * tile, column tile) for each of their tile pairs, large ones from segs[max_small]. */
__global__ void __launch_bounds__(RANK_BLOCK)
    rank_kernel(const uint64_t *ck1, const uint64_t *ck2, int *counters, int cshift, int bits, int cap,
                const float4 *boxes, const int *cls, float4 *sboxes, int *scls, int *srank, int *gidx, int2 *segs,
                int max_small, int4 *pairs)
{
    extern __shared__ uint64_t staged[];
    int n = counters[C_CANDIDATES], e = blockIdx.x * RANK_BLOCK + threadIdx.x;
    if (blockIdx.x * RANK_BLOCK >= n) return; /* the whole block leaves */
    int chunks = (n + CHUNK - 1) / CHUNK, live = e < n, pos = 0, rank = 0, seg_len = 0;
    const uint64_t *src = stage_chunks(ck2, chunks * CHUNK, cap, staged);
    uint64_t k2 = live ? src[e] : 0, k1 = k2;
    if (live) pos = rank = count_below(src, chunks, k2);
    if (cshift) {
        uint64_t c = k2 >> cshift;
        k1 = k2 & ((1ull << cshift) - 1);
        /* the host keeps c + 1 below 2^(64 - cshift), so (c + 1) << cshift does not wrap */
        if (live && (e % CHUNK == 0 || (src[e - 1] >> cshift) != c) && count_below(src, chunks, c << cshift) == pos)
            seg_len = count_below(src, chunks, (c + 1) << cshift) - pos;
        src = stage_chunks(ck1, chunks * CHUNK, cap, staged);
        if (live) rank = count_below(src, chunks, k1);
    } else if (live && pos == 0) {
        seg_len = n;
    }
    if (!live) return; /* no barrier follows */
    int i = (int)(k1 & ((1ull << bits) - 1));
    sboxes[pos] = boxes[i];
    scls[pos] = cls[i];
    srank[pos] = rank;
    gidx[rank] = i;
    if (seg_len > SEG_MAX) {
        segs[max_small + atomicAdd(&counters[C_LARGE], 1)] = make_int2(pos, seg_len);
    } else if (seg_len > 0) { /* at most one pair per candidate: a segment of one */
        int tiles = (seg_len + TILE - 1) / TILE, s = atomicAdd(&counters[C_SMALL], 1);
        int p = atomicAdd(&counters[C_PAIRS], tiles * (tiles + 1) / 2);
        segs[s] = make_int2(pos, seg_len);
        for (int rt = 0; rt < tiles; rt++)
            for (int ct = rt; ct < tiles; ct++) pairs[p++] = make_int4(pos, seg_len, rt, ct);
    }
}

/* ---------------------------------------------------------------- the segments */

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

/* Warp: the greedy result of a tile from its undecided rows (valid, not removed by kept rows of
 * earlier tiles) and each row's in-tile suppressors (lane's row in in0, row lane + 32 in in1).
 * A box is kept when all its earlier suppressors are decided and none is kept, removed when one
 * of them is kept: each round decides at least the first undecided box, so this is the greedy
 * order's result, in as many rounds as the longest chain of suppressions in the tile. */
__device__ __forceinline__ uint64_t resolve_rounds(uint64_t undecided, uint64_t in0, uint64_t in1)
{
    int lane = threadIdx.x & 31;
    uint64_t keep = 0;
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
    return keep;
}

/* The IoU bits of (row a, 16 columns) from 4 consecutive lanes into one word on each of them. */
__device__ __forceinline__ uint64_t or_quad(uint64_t v)
{
    v |= __shfl_xor_sync(FULL_WARP, v, 1);
    return v | __shfl_xor_sync(FULL_WARP, v, 2);
}

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

/* All threads: the bits of tile pair (rt, ct) of the segment at [start, start + m), 4 threads
 * per row, into its rows of the matrix (stride words each) and, on the diagonal, the
 * rows' in-tile suppressors. */
__device__ void pair_tile(int start, int m, int rt, int ct, const float4 *sboxes, const int *scls, float iou,
                          int check_cls, int stride, uint64_t *mask, uint64_t *in_bits, float4 *col_box, int *col_cls)
{
    int t = threadIdx.x, rl = t >> 2, part = t & 3; /* row of the tile, quarter of the columns */
    int row = rt * TILE + rl, ncol = min(TILE, m - ct * TILE);
    float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    int ac = 0;
    if (row < m) { /* loaded with the columns, in one round trip */
        a = sboxes[start + row];
        ac = scls[start + row];
    }
    __syncthreads(); /* the previous tile's columns are read */
    if (t < TILE && ct * TILE + t < m) {
        col_box[t] = sboxes[start + ct * TILE + t];
        col_cls[t] = scls[start + ct * TILE + t];
    }
    __syncthreads();
    uint64_t out = 0, in = 0;
    if (row < m) {
        int j1 = min(part * 16 + 16, ncol);
        for (int j = part * 16; j < j1; j++) {
            if (check_cls && col_cls[j] != ac) continue;
            float4 b = col_box[j];
            if (rt != ct || j > rl) { /* a later box: does this row suppress it? */
                if (zv_suppresses(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, iou)) out |= 1ull << j;
            } else if (j < rl) { /* an earlier box of the same tile: does it suppress this row? */
                if (zv_suppresses(b.x, b.y, b.z, b.w, a.x, a.y, a.z, a.w, iou)) in |= 1ull << j;
            }
        }
    }
    out = or_quad(out); /* the row's four threads are consecutive lanes with disjoint bits */
    in = or_quad(in);
    if (part == 0 && row < m) {
        mask[(size_t)(start + row) * (size_t)stride + (size_t)ct] = out;
        if (rt == ct) in_bits[start + row] = in;
    }
}

/* The IoU bits of every segment: the tile pairs of the small segments, a block each, then those
 * of the large segments, numbered across them in list order; all dealt out to the blocks
 * round-robin. Every loop bound is the same for the whole block, so the barriers inside are
 * safe. */
__global__ void __launch_bounds__(SEG_BLOCK)
    pairs_kernel(const int2 *segs, int max_small, const int4 *pairs, const int *counters, const float4 *sboxes,
                 const int *scls, float iou, int check_cls, int stride, uint64_t *mask, uint64_t *in_bits)
{
    __shared__ float4 box[TILE];
    __shared__ int bcls[TILE];
    int n_pairs = counters[C_PAIRS], n_large = counters[C_LARGE], g = (int)gridDim.x;
    for (int p = blockIdx.x; p < n_pairs; p += g) {
        int4 q = pairs[p];
        pair_tile(q.x, q.y, q.z, q.w, sboxes, scls, iou, check_cls, stride, mask, in_bits, box, bcls);
    }
    long long base = n_pairs; /* the pairs before this large segment's */
    for (int l = 0; l < n_large; l++) {
        int2 sg = segs[max_small + l];
        int tiles = (sg.y + TILE - 1) / TILE;
        long long count = (long long)tiles * (tiles + 1) / 2;
        int first = (int)(((long long)blockIdx.x - base % g + g) % g); /* this block's first pair here */
        if (first < count) {
            int rt = 0, ct = 0;
            advance_pair(tiles, first, &rt, &ct);
            for (; rt < tiles; advance_pair(tiles, g, &rt, &ct))
                pair_tile(sg.x, sg.y, rt, ct, sboxes, scls, iou, check_cls, stride, mask, in_bits, box, bcls);
        }
        base += count;
    }
}

/* ---------------------------------------------------------------- large segments and the end */

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

/* Warp 0: decides tile t (tl of the group) of an m-box segment from the bits that earlier tiles
 * removed and each row's in-tile suppressors, appends its kept rows to `kept` and publishes them. */
__device__ __forceinline__ void resolve_tile(int t, int tl, int m, const uint64_t *gin, const uint64_t *removed,
                                             int *kept, int *s_kept, uint64_t *s_keep)
{
    int lane = threadIdx.x & 31, rows = min(TILE, m - t * TILE);
    uint64_t valid = rows == TILE ? ~0ull : (1ull << rows) - 1;
    uint64_t keep = resolve_rounds(~removed[tl] & valid, lane < rows ? gin[tl * TILE + lane] : 0,
                                   lane + 32 < rows ? gin[tl * TILE + lane + 32] : 0);
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
__device__ __forceinline__ void or_earlier(const uint64_t *mask, const int *kept, int before, int stride, int g0,
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
        for (int u = 0; u < 8; u++) v[u] = col[(size_t)kept[k + u * parts] * (size_t)stride];
#pragma unroll
        for (int u = 0; u < 8; u++) acc |= v[u];
    }
    for (; k < before; k += parts) acc |= col[(size_t)kept[k] * (size_t)stride];
    if (acc) atomicOr((unsigned long long *)&removed[t % gc], (unsigned long long)acc);
}

/* All threads: the group's own words (row tile tl, later word wl) into shared columns, and the
 * in-tile bits of its rows. */
__device__ __forceinline__ void load_group(const uint64_t *mask, const uint64_t *in_bits, int stride, int g0, int gc,
                                           int rows, uint64_t *gmask, uint64_t *gin)
{
    int total = rows * gc, t = threadIdx.x;
    size_t first = (size_t)g0 * TILE;
    for (int base = t; base < total; base += 4 * REDUCE_BLOCK) {
        uint64_t v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) { /* loads first, so that four are in flight */
            int idx = base + u * REDUCE_BLOCK, rl = idx / gc, wl = idx - rl * gc;
            v[u] = idx < total && wl > rl / TILE ? mask[(first + (size_t)rl) * (size_t)stride + (size_t)(g0 + wl)] : 0;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int idx = base + u * REDUCE_BLOCK, rl = idx / gc, wl = idx - rl * gc;
            if (idx < total && wl > rl / TILE) gmask[column_at(gc, rl / TILE, wl) + rl % TILE] = v[u];
        }
    }
    for (int rl = t; rl < rows; rl += REDUCE_BLOCK) gin[rl] = in_bits[first + (size_t)rl];
}

/* All threads: resolves the large segment at [start, start + m) tile by tile, in groups of tiles
 * whose bits fit in shared memory, and flags its kept boxes at their ranks. */
__device__ void large_segment(int start, int m, const uint64_t *mask, const uint64_t *in_bits, int stride,
                              const int *srank, int *kept, int group, unsigned char *flags, uint64_t *smem,
                              int *s_kept, uint64_t *s_keep)
{
    int t = threadIdx.x, lane = t & 31, warp = t >> 5, tiles = (m + TILE - 1) / TILE;
    uint64_t *gmask = smem, *gin = gmask + (size_t)COL_STRIDE * group_columns(group), *removed = gin + TILE * group;
    mask += (size_t)start * (size_t)stride;
    in_bits += start;
    kept += start;
    if (t == 0) *s_kept = 0;
    __syncthreads();
    /* every loop bound below is the same for the whole block, so the barriers are safe */
    for (int g0 = 0; g0 < tiles; g0 += group) {
        int gc = min(group, tiles - g0), rows = min(m - g0 * TILE, gc * TILE), before = *s_kept;
        for (int w = t; w < gc; w += REDUCE_BLOCK) removed[w] = 0;
        __syncthreads();
        if (before > 0) or_earlier(mask, kept, before, stride, g0, gc, removed);
        load_group(mask, in_bits, stride, g0, gc, rows, gmask, gin);
        __syncthreads();
        for (int tl = 0; tl < gc; tl++) {
            if (warp == 0) resolve_tile(g0 + tl, tl, m, gin, removed, kept, s_kept, s_keep);
            __syncthreads();
            uint64_t keep = *s_keep;
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
    int n_kept = *s_kept;
    for (int k0 = 0; k0 < n_kept; k0 += 4 * REDUCE_BLOCK) {
        int r[4];
#pragma unroll
        for (int u = 0; u < 4; u++) { /* four chains of loads in flight */
            int k = k0 + u * REDUCE_BLOCK + t;
            r[u] = k < n_kept ? srank[start + kept[k]] : -1;
        }
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (r[u] >= 0) flags[r[u]] = 1;
    }
}

/* All threads: the sum of v over the threads before this one, and the block's in *total. */
__device__ __forceinline__ int exclusive_sum(int v, int *s_warp, int *total)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, x = v;
    for (int off = 1; off < 32; off <<= 1) {
        int y = __shfl_up_sync(FULL_WARP, x, off);
        if (lane >= off) x += y;
    }
    if (lane == 31) s_warp[warp] = x;
    __syncthreads();
    if (warp == 0) { /* REDUCE_BLOCK / 32 == 32 warp sums */
        int w = s_warp[lane];
        for (int off = 1; off < 32; off <<= 1) {
            int y = __shfl_up_sync(FULL_WARP, w, off);
            if (lane >= off) w += y;
        }
        s_warp[lane] = w;
    }
    __syncthreads();
    *total = s_warp[31];
    return x - v + (warp ? s_warp[warp - 1] : 0);
}

/* All threads: resolves the small segment at [start, start + m) from its bits (staged in shared
 * memory with the boxes' ranks, SEG_STRIDE words per row: the later words, then the in-tile
 * suppressors) and flags its kept boxes at their ranks. Warp 0 decides the tiles in order; the
 * kept rows of a tile clear their bits in the later words, which lane w keeps for word w. */
__device__ void small_segment(int start, int m, const uint64_t *mask, const uint64_t *in_bits, int stride,
                              const int *srank, unsigned char *flags, uint64_t *bits)
{
    int t = threadIdx.x, lane = t & 31, tiles = (m + TILE - 1) / TILE;
    int *ranks = (int *)(bits + SEG_MAX * SEG_STRIDE);
    enum { LOADS = (SEG_MAX * SEG_STRIDE + REDUCE_BLOCK - 1) / REDUCE_BLOCK };
    uint64_t v[LOADS];
    int rank = t < m ? srank[start + t] : 0;
    __syncthreads(); /* the previous segment is resolved */
#pragma unroll
    for (int u = 0; u < LOADS; u++) { /* all loads in flight before the first store */
        int k = u * REDUCE_BLOCK + t, i = k / SEG_STRIDE, w = k - i * SEG_STRIDE;
        v[u] = 0;
        if (i < m && w == SEG_WORDS) v[u] = in_bits[start + i];
        else if (i < m && w >= i / TILE && w < tiles) v[u] = mask[(size_t)(start + i) * (size_t)stride + (size_t)w];
    }
#pragma unroll
    for (int u = 0; u < LOADS; u++)
        if (u * REDUCE_BLOCK + t < m * SEG_STRIDE) bits[u * REDUCE_BLOCK + t] = v[u];
    if (t < m) ranks[t] = rank;
    __syncthreads();
    if (t >= 32) return; /* the next segment starts with a barrier */
    uint64_t removed = 0, kept_here = 0; /* lane w: word w's bits removed by kept rows; tile w's kept rows */
    for (int tl = 0; tl < tiles; tl++) {
        int rows = min(TILE, m - tl * TILE);
        const uint64_t *r0 = bits + (tl * TILE + lane) * SEG_STRIDE, *r1 = r0 + 32 * SEG_STRIDE;
        uint64_t valid = rows == TILE ? ~0ull : (1ull << rows) - 1;
        uint64_t keep = resolve_rounds(~__shfl_sync(FULL_WARP, removed, tl) & valid,
                                       lane < rows ? r0[SEG_WORDS] : 0, lane + 32 < rows ? r1[SEG_WORDS] : 0);
        int k0 = (int)((keep >> lane) & 1), k1 = (int)((keep >> (lane + 32)) & 1);
        if (lane == tl) kept_here = keep;
#pragma unroll
        for (int w = 1; w < SEG_WORDS; w++) /* the kept rows' bits of each later word */
            if (w > tl && w < tiles) {
                uint64_t b = warp_or64((k0 ? r0[w] : 0) | (k1 ? r1[w] : 0));
                if (lane == w) removed |= b;
            }
    }
    for (int tl = 0; tl < tiles; tl++) {
        uint64_t keep = __shfl_sync(FULL_WARP, kept_here, tl);
        if ((keep >> lane) & 1) flags[ranks[tl * TILE + lane]] = 1;
        if ((keep >> (lane + 32)) & 1) flags[ranks[tl * TILE + lane + 32]] = 1;
    }
}

/* Detection k: the candidate at rank r, mapped to the frame. */
__device__ __forceinline__ void emit(int r, int k, const int *gidx, const float4 *boxes, const float *scores,
                                     const int *cls, const zv_map *map, unsigned char *result)
{
    zci_detection *dets = (zci_detection *)(result + sizeof(zci_detect_counts));
    int i = gidx[r];
    float4 b = boxes[i];
    float box[4] = {b.x, b.y, b.z, b.w};
    zv_emit(map, box, scores[i], cls[i], &dets[k]);
}

/* The blocks resolve the large segments round-robin, then the small ones from block n_large on.
 * The last block to get here then writes the run's results: the kept boxes in rank order (each
 * thread a run of `per` consecutive ranks, read 4 flags at a time and placed by a block-wide scan
 * of their counts), the first top_k of them mapped to the frame (finish_smem: the bytes of
 * dynamic shared memory), and the counts; and it clears the flags and counters for the next run
 * (so no memset is queued). */
__global__ void __launch_bounds__(REDUCE_BLOCK)
    finish_kernel(const uint64_t *mask, const uint64_t *in_bits, int stride, const int2 *segs, int max_small,
                  int *counters, const int *srank, int *kept, int group, unsigned char *flags, const int *gidx,
                  const float4 *boxes, const float *scores, const int *cls, int top_k, zv_map map,
                  unsigned char *result, size_t finish_smem)
{
    extern __shared__ uint64_t smem[];
    __shared__ int s_kept, s_last, s_warp[REDUCE_BLOCK / 32];
    __shared__ uint64_t s_keep;
    int t = threadIdx.x, g = (int)gridDim.x, n_large = counters[C_LARGE], n_small = counters[C_SMALL];
    for (int l = blockIdx.x; l < n_large; l += g) { /* the same for the whole block */
        int2 sg = segs[max_small + l];
        large_segment(sg.x, sg.y, mask, in_bits, stride, srank, kept, group, flags, smem, &s_kept, &s_keep);
    }
    for (int s = ((int)blockIdx.x - n_large % g + g) % g; s < n_small; s += g) {
        int2 sg = segs[s];
        small_segment(sg.x, sg.y, mask, in_bits, stride, srank, flags, smem);
    }
    __threadfence(); /* this block's flags reach the last block */
    __syncthreads();
    if (t == 0) s_last = atomicAdd(&counters[C_FINISHED], 1) == g - 1;
    __syncthreads();
    if (!s_last) return; /* the whole block leaves */
    /* flags holds whole words past n, all clear. Each thread counts its run of ranks, then lists
     * the ranks of its kept boxes that make the output in shared memory (where the segments'
     * bits were), and the block emits them, one detection per thread at a time. */
    int n = counters[C_CANDIDATES], per = (n + 4 * REDUCE_BLOCK - 1) / (4 * REDUCE_BLOCK) * 4, lo = t * per;
    int n_words = per / 4, mine = 0, n_kept;
    unsigned *words = (unsigned *)(flags + lo);
    for (int w0 = 0; w0 < n_words; w0 += 4) { /* read from L2: other blocks set some */
        unsigned v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) v[u] = w0 + u < n_words ? __ldcg(&words[w0 + u]) : 0;
#pragma unroll
        for (int u = 0; u < 4; u++) mine += __popc(v[u]);
    }
    int k = exclusive_sum(mine, s_warp, &n_kept), count = min(n_kept, top_k);
    int *out = (int *)smem, room = (int)(finish_smem / sizeof(int));
    for (int w0 = 0; w0 < n_words && mine > 0; w0 += 4) {
        unsigned v[4];
#pragma unroll
        for (int u = 0; u < 4; u++) v[u] = w0 + u < n_words ? __ldcg(&words[w0 + u]) : 0;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            for (int b = 0; b < 4; b++)
                if ((v[u] >> (8 * b)) & 1) {
                    if (k < count) {
                        int r = lo + 4 * (w0 + u) + b;
                        if (k < room) out[k] = r;
                        else emit(r, k, gidx, boxes, scores, cls, &map, result);
                    }
                    k++;
                }
            if (v[u]) words[w0 + u] = 0;
        }
    }
    __syncthreads();
    for (int j = t; j < count && j < room; j += REDUCE_BLOCK) emit(out[j], j, gidx, boxes, scores, cls, &map, result);
    if (t == 0) { /* every thread has read n (exclusive_sum has barriers) */
        zci_detect_counts *c = (zci_detect_counts *)result;
        c->count = count;
        c->candidates = n;
        c->after_nms = n_kept;
        c->reserved = 0;
        for (int j = 0; j < C_COUNT; j++) counters[j] = 0; /* every kernel of this run has read them */
    }
}

/* ---------------------------------------------------------------- host side */

static void free_state(zv_cuda_pp *c)
{
    if (c->stream) cudaStreamSynchronize(c->stream);
    void *dev[] = {c->keys,      c->ck1,   c->ck2,     c->boxes,    c->scores, c->cls,     c->sboxes,
                   c->scls,      c->srank, c->gidx,    c->segs,     c->pairs,     c->counters, c->flags,
                   c->mask,      c->in_bits, c->kept,  c->result,   c->frame_buf};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (c->host_result) cudaFreeHost(c->host_result);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

template <typename T> static cudaError_t alloc_n(T **p, size_t n) { return cudaMalloc((void **)p, n * sizeof(T)); }

/* Kernel limits that depend on the device. The finish kernel's shared memory: the largest group
 * of tiles (at most MAX_GROUP) that the device gives one block, of which a run of this
 * postprocessor uses what its size allows, or at least a small segment's bits; the rank kernel's:
 * as many sorted keys as the device gives one block. Both limits are set to the device's largest,
 * the same for every postprocessor on the device. Then the blocks that fill the device. */
static zci_status choose_limits(zv_cuda_pp *c, const char *where)
{
    int optin = 0, sms = 0, per_sm = 0;
    ZV_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device),
            "querying shared memory");
    ZV_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c->device), "querying the SM count");
    sms = sms > 0 ? sms : 1;
    cudaFuncAttributes fa;
    ZV_CUDA(cudaFuncGetAttributes(&fa, finish_kernel), "querying the NMS kernel");
    size_t small_bits = sizeof(uint64_t) * SEG_MAX * SEG_STRIDE + sizeof(int) * SEG_MAX; /* bits, ranks */
    int g = MAX_GROUP;
    while (g > 1 && group_smem_bytes(g) + fa.sharedSizeBytes > (size_t)optin) g--;
    size_t most = group_smem_bytes(g) > small_bits ? group_smem_bytes(g) : small_bits;
    ZV_CUDA(cudaFuncSetAttribute(finish_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)most),
            "sizing the NMS kernel's shared memory");
    c->group = c->max_tiles < g ? c->max_tiles : g;
    c->finish_smem = group_smem_bytes(c->group) > small_bits ? group_smem_bytes(c->group) : small_bits;
    ZV_CUDA(cudaFuncGetAttributes(&fa, rank_kernel), "querying the rank kernel");
    int device_cap = (int)(((size_t)optin - fa.sharedSizeBytes) / sizeof(uint64_t)) / CHUNK * CHUNK;
    ZV_CUDA(cudaFuncSetAttribute(rank_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)(device_cap * sizeof(uint64_t))),
            "sizing the rank kernel's shared memory");
    int sorted = (c->max_candidates + CHUNK - 1) / CHUNK * CHUNK;
    c->rank_cap = sorted < device_cap ? sorted : device_cap;
    ZV_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, pairs_kernel, SEG_BLOCK, 0),
            "querying the pairs kernel");
    c->pair_blocks = (per_sm > 0 ? per_sm : 1) * sms;
    ZV_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, finish_kernel, REDUCE_BLOCK, c->finish_smem),
            "querying the NMS kernel");
    c->finish_blocks = (per_sm > 0 ? per_sm : 1) * sms;
    return ZCI_OK;
}

/* Large segments are longer than SEG_MAX: at most this many in n candidates. */
static int max_large(int n) { return n / (SEG_MAX + 1); }

/* The flags, with the whole words that the finish kernel's threads read past the last rank. */
static size_t flag_bytes(int n) { return (size_t)n + 4 * REDUCE_BLOCK; }

static zci_status create_state(zci_postprocessor *pp, zv_cuda_pp *c)
{
    const char *where = "zci_postprocessor_create";
    size_t n = (size_t)pp->max_candidates, sorted = (n + CHUNK - 1) / CHUNK * CHUNK;
    c->max_candidates = pp->max_candidates;
    c->max_tiles = (int)((n + TILE - 1) / TILE);
    c->last_top_k = -1;
    c->counter_stale = 1;
    ZV_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "creating its stream");
    ZCI_TRY(choose_limits(c, where));
    ZV_CUDA(alloc_n(&c->keys, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->ck1, sorted), "allocating candidates");
    ZV_CUDA(alloc_n(&c->ck2, sorted), "allocating candidates");
    ZV_CUDA(alloc_n(&c->boxes, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->scores, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->cls, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->sboxes, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->scls, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->srank, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->gidx, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->segs, n + (size_t)max_large(pp->max_candidates)), "allocating candidates");
    ZV_CUDA(alloc_n(&c->pairs, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->flags, flag_bytes(pp->max_candidates)), "allocating candidates");
    ZV_CUDA(alloc_n(&c->in_bits, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->kept, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->counters, (size_t)C_COUNT), "allocating counters");
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

/* Queues the five kernels. A launch that fails leaves counters and flags possibly set: the next
 * run clears them first. */
static zci_status launch(zv_cuda_pp *c, const void *img, const zv_yolo *y, const zci_postprocess_params *params,
                         int top_k, const zci_letterbox *transform, cudaStream_t s)
{
    const char *where = "zci_postprocess_cuda";
    if (c->counter_stale) {
        ZV_CUDA(cudaMemsetAsync(c->counters, 0, C_COUNT * sizeof(int), s), "clearing the counters");
        ZV_CUDA(cudaMemsetAsync(c->flags, 0, flag_bytes(c->max_candidates), s), "clearing the counters");
        c->counter_stale = 0;
    }
    c->counter_stale = 1;
    /* Class-aware keys hold the class above the rank key (32 score bits + `bits` index bits) when
     * every class + 1 fits there; otherwise all candidates form one segment whose IoU tests
     * compare classes. */
    int bits = zv_index_bits(y->n), cshift = 32 + bits;
    int class_key = !params->class_agnostic && (uint64_t)y->nc < (1ull << (64 - cshift));
    int check_cls = !params->class_agnostic && !class_key;
    if (!class_key) cshift = 0;
    float thr = params->score_threshold;
    if (y->layout == ZCI_YOLO_V5)
        decode_v5_kernel<<<(y->n + DECODE_BLOCK - 1) / DECODE_BLOCK, DECODE_BLOCK, 0, s>>>(
            img, *y, thr, bits, cshift, c->keys, c->boxes, c->scores, c->cls, c->counters + C_CANDIDATES);
    else
        decode_v8_kernel<<<(y->n + 31) / 32, 32 * V8_SLICES, 0, s>>>(img, *y, thr, bits, cshift, c->keys, c->boxes,
                                                                       c->scores, c->cls, c->counters + C_CANDIDATES);
    ZV_CUDA(cudaGetLastError(), "launching the decoder");
    uint64_t k1_mask = cshift ? (1ull << cshift) - 1 : ~0ull;
    int chunks = (y->n + CHUNK - 1) / CHUNK, cap = chunks * CHUNK < c->rank_cap ? chunks * CHUNK : c->rank_cap;
    chunk_sort_kernel<<<chunks, SORT_BLOCK, 0, s>>>(c->keys, c->counters, class_key, k1_mask, c->ck1, c->ck2);
    ZV_CUDA(cudaGetLastError(), "launching the sort");
    rank_kernel<<<(y->n + RANK_BLOCK - 1) / RANK_BLOCK, RANK_BLOCK, (size_t)cap * sizeof(uint64_t), s>>>(
        c->ck1, c->ck2, c->counters, cshift, bits, cap, c->boxes, c->cls, c->sboxes, c->scls, c->srank, c->gidx,
        c->segs, c->max_candidates, c->pairs);
    ZV_CUDA(cudaGetLastError(), "launching the ranking");
    pairs_kernel<<<y->n < c->pair_blocks ? y->n : c->pair_blocks, SEG_BLOCK, 0, s>>>(
        c->segs, c->max_candidates, c->pairs, c->counters, c->sboxes, c->scls, params->iou_threshold, check_cls,
        c->max_tiles, c->mask, c->in_bits);
    ZV_CUDA(cudaGetLastError(), "launching the IoU bits");
    finish_kernel<<<y->n < c->finish_blocks ? y->n : c->finish_blocks, REDUCE_BLOCK, c->finish_smem, s>>>(
        c->mask, c->in_bits, c->max_tiles, c->segs, c->max_candidates, c->counters, c->srank, c->kept, c->group,
        c->flags, c->gidx, c->boxes, c->scores, c->cls, top_k, zv_map_from(transform), c->result, c->finish_smem);
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
