/* nms.cu: YOLO decoding and class-aware NMS on the GPU, the classic bit-matrix way, in four
 * kernels and no host round trip:
 *   1. decode: one thread per candidate; those above the threshold are appended (one atomic
 *      per warp) with a 64-bit key: score descending, then candidate index ascending;
 *   2. rank: each appended candidate counts the keys smaller than its own (keys are unique)
 *      and moves to that position: a deterministic sort in one launch, cheap for the few
 *      hundred candidates a frame has and still bounded (~0.1 ms) when all 25,200 pass;
 *   3. the IoU bit matrix: for each pair of 64-candidate tiles (row tile <= column tile), 64
 *      threads each compute one row's 64 bits "this later box is suppressed by me";
 *   4. one warp walks the tiles in order: a candidate is kept when no kept box suppressed it,
 *      kept rows are OR-ed into the "removed" bits (in shared memory), and the first top_k
 *      kept boxes, mapped to the frame, and the counts are written.
 * The number of candidates is known only on the device, so kernels 2 to 4 read it there and
 * loop over the work it implies. Everything is allocated at creation. The math is vision.h's,
 * shared with the CPU version, so the sets are identical. */
#include <stdio.h>

#include <cuda_runtime.h>

#include "vision/vision.h"

#define TILE 64
#define DECODE_BLOCK 256
#define RANK_BLOCK 256
#define MASK_GRID_X 16
#define MASK_GRID_Y 64
#define FULL_WARP 0xffffffffu

struct zv_cuda_pp {
    int device;
    cudaStream_t stream;
    int max_tiles;                /* ceil(max_candidates / 64) */
    uint64_t *keys;               /* appended candidates */
    float4 *boxes, *sboxes;       /* appended; in sorted order */
    float *scores, *sscores;
    int *cls, *scls;
    int *n_candidates;         /* the decode kernel's count */
    uint64_t *mask;            /* max_candidates x max_tiles words, row stride = tiles of the run */
    unsigned char *result;     /* zci_detect_counts, then max_detections zci_detection */
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

/* ---------------------------------------------------------------- kernels */

__global__ void __launch_bounds__(DECODE_BLOCK)
    decode_kernel(const void *data, zv_yolo y, float thr, int index_bits, uint64_t *keys, float4 *boxes,
                  float *scores, int *cls, int *n_candidates)
{
    int i = blockIdx.x * DECODE_BLOCK + threadIdx.x, lane = threadIdx.x & 31;
    int valid = 0, c = 0;
    float b[4], s = 0;
    if (i < y.n) valid = zv_decode(data, &y, i, thr, b, &s, &c);
    /* append: one atomic per warp; the order of the warps does not matter (rank sorts) */
    unsigned m = __ballot_sync(FULL_WARP, valid);
    if (!m) return;
    int leader = __ffs(m) - 1, base = 0;
    if (lane == leader) base = atomicAdd(n_candidates, __popc(m));
    base = __shfl_sync(FULL_WARP, base, leader);
    if (!valid) return;
    int slot = base + __popc(m & ((1u << lane) - 1));
    keys[slot] = zv_sort_key(s, i, index_bits);
    boxes[slot] = make_float4(b[0], b[1], b[2], b[3]);
    scores[slot] = s;
    cls[slot] = c;
}

__global__ void __launch_bounds__(RANK_BLOCK)
    rank_kernel(const uint64_t *keys, const float4 *boxes, const float *scores, const int *cls,
                const int *n_candidates, float4 *sboxes, float *sscores, int *scls)
{
    __shared__ uint64_t tile[RANK_BLOCK];
    int n = *n_candidates;
    /* block-uniform loops: the barriers are safe */
    for (int base = blockIdx.x * RANK_BLOCK; base < n; base += gridDim.x * RANK_BLOCK) {
        int i = base + threadIdx.x, rank = 0;
        uint64_t k = i < n ? keys[i] : ~0ull;
        for (int t0 = 0; t0 < n; t0 += RANK_BLOCK) {
            __syncthreads();
            tile[threadIdx.x] = t0 + threadIdx.x < n ? keys[t0 + threadIdx.x] : ~0ull;
            __syncthreads();
            int m = min(RANK_BLOCK, n - t0);
#pragma unroll 8
            for (int j = 0; j < m; j++) rank += tile[j] < k;
        }
        if (i < n) {
            sboxes[rank] = boxes[i];
            sscores[rank] = scores[i];
            scls[rank] = cls[i];
        }
    }
}

__global__ void __launch_bounds__(TILE)
    mask_kernel(const float4 *sboxes, const int *scls, const int *n_candidates, float iou, int agnostic,
                uint64_t *mask)
{
    __shared__ float4 col_box[TILE];
    __shared__ int col_cls[TILE];
    int n = *n_candidates, tiles = (n + TILE - 1) / TILE, t = threadIdx.x;
    /* the loop bounds are the same for the whole block, so the barriers are safe */
    for (int rt = blockIdx.y; rt < tiles; rt += gridDim.y)
        for (int ct = rt + blockIdx.x; ct < tiles; ct += gridDim.x) {
            int col = ct * TILE + t, ncol = min(TILE, n - ct * TILE);
            __syncthreads();
            if (col < n) {
                col_box[t] = sboxes[col];
                col_cls[t] = scls[col];
            }
            __syncthreads();
            int row = rt * TILE + t;
            if (row >= n) continue;
            float4 a = sboxes[row];
            int ac = scls[row];
            uint64_t bits = 0;
            for (int j = rt == ct ? t + 1 : 0; j < ncol; j++) {
                float4 b = col_box[j];
                if ((agnostic || col_cls[j] == ac) && zv_suppresses(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, iou))
                    bits |= 1ull << j;
            }
            mask[(size_t)row * (size_t)tiles + (size_t)ct] = bits;
        }
}

/* Diagonal words (a tile's bits within itself) of tile t for this lane's two rows. */
__device__ __forceinline__ void load_diag(const uint64_t *mask, int n, int tiles, int t, int lane, uint64_t *d0,
                                          uint64_t *d1)
{
    int r0 = t * TILE + lane, r1 = r0 + 32;
    *d0 = r0 < n ? mask[(size_t)r0 * (size_t)tiles + (size_t)t] : 0;
    *d1 = r1 < n ? mask[(size_t)r1 * (size_t)tiles + (size_t)t] : 0;
}

/* One warp, warp-synchronous (no block barriers): the serial part of NMS is short per tile
 * (only the candidates still standing are visited), and the next tile's diagonal words are
 * loaded while the current one is processed. */
__global__ void __launch_bounds__(32)
    reduce_kernel(const uint64_t *mask, const int *n_candidates, const float4 *sboxes, const float *sscores,
                  const int *scls, int top_k, zv_map map, unsigned char *result)
{
    extern __shared__ uint64_t removed[]; /* one bit per candidate */
    __shared__ int keep[TILE];
    int n = *n_candidates, tiles = (n + TILE - 1) / TILE, lane = threadIdx.x;
    zci_detection *dets = (zci_detection *)(result + sizeof(zci_detect_counts));
    for (int w = lane; w < tiles; w += 32) removed[w] = 0;
    __syncwarp();
    uint64_t d0 = 0, d1 = 0;
    if (tiles > 0) load_diag(mask, n, tiles, 0, lane, &d0, &d1);
    int kept = 0;
    for (int t = 0; t < tiles; t++) {
        uint64_t c0 = d0, c1 = d1;
        if (t + 1 < tiles) load_diag(mask, n, tiles, t + 1, lane, &d0, &d1);
        int rows = min(TILE, n - t * TILE);
        uint64_t valid = rows == TILE ? ~0ull : (1ull << rows) - 1;
        uint64_t rem = removed[t], avail = ~rem & valid;
        int nk = 0;
        while (avail) { /* the same on every lane */
            int b = __ffsll((long long)avail) - 1;
            uint64_t diag = __shfl_sync(FULL_WARP, b < 32 ? c0 : c1, b & 31);
            if (lane == 0) keep[nk] = t * TILE + b;
            nk++;
            rem |= diag;
            avail = ~rem & valid & ((~0ull << b) << 1);
        }
        __syncwarp();
        for (int j = lane; j < nk; j += 32)
            if (kept + j < top_k) {
                int r = keep[j];
                float4 bx = sboxes[r];
                float box[4] = {bx.x, bx.y, bx.z, bx.w};
                zv_emit(&map, box, sscores[r], scls[r], &dets[kept + j]);
            }
        for (int w = t + 1 + lane; w < tiles; w += 32) {
            uint64_t acc = removed[w];
            for (int k = 0; k < nk; k++) acc |= mask[(size_t)keep[k] * (size_t)tiles + (size_t)w];
            removed[w] = acc;
        }
        kept += nk;
        __syncwarp();
    }
    if (lane == 0) {
        zci_detect_counts *c = (zci_detect_counts *)result;
        c->count = min(kept, top_k);
        c->candidates = n;
        c->after_nms = kept;
        c->reserved = 0;
    }
}

/* ---------------------------------------------------------------- host side */

static void free_state(zv_cuda_pp *c)
{
    if (c->stream) cudaStreamSynchronize(c->stream);
    void *dev[] = {c->keys, c->boxes, c->sboxes, c->scores,       c->sscores,  c->cls,
                   c->scls, c->mask,  c->result, c->n_candidates, c->frame_buf};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (c->host_result) cudaFreeHost(c->host_result);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

template <typename T> static cudaError_t alloc_n(T **p, size_t n) { return cudaMalloc((void **)p, n * sizeof(T)); }

static zci_status create_state(zci_postprocessor *pp, zv_cuda_pp *c)
{
    const char *where = "zci_postprocessor_create";
    size_t n = (size_t)pp->max_candidates;
    c->max_tiles = (int)((n + TILE - 1) / TILE);
    c->last_top_k = -1;
    ZV_CUDA(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "creating its stream");
    ZV_CUDA(alloc_n(&c->keys, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->boxes, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->sboxes, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->scores, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->sscores, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->cls, n), "allocating candidates");
    ZV_CUDA(alloc_n(&c->scls, n), "allocating candidates");
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
    ZV_CUDA(cudaGetDevice(&c->device), "querying the current device");
    zci_status st = create_state(pp, c);
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
    int bits = zv_index_bits(y.n);
    ZV_CUDA(cudaMemsetAsync(c->n_candidates, 0, sizeof(int), s), "clearing the counter");
    int blocks = (y.n + DECODE_BLOCK - 1) / DECODE_BLOCK;
    decode_kernel<<<blocks, DECODE_BLOCK, 0, s>>>(img, y, params->score_threshold, bits, c->keys, c->boxes,
                                                  c->scores, c->cls, c->n_candidates);
    ZV_CUDA(cudaGetLastError(), "launching the decoder");
    rank_kernel<<<(y.n + RANK_BLOCK - 1) / RANK_BLOCK, RANK_BLOCK, 0, s>>>(
        c->keys, c->boxes, c->scores, c->cls, c->n_candidates, c->sboxes, c->sscores, c->scls);
    ZV_CUDA(cudaGetLastError(), "launching the sort");
    int tiles = (y.n + TILE - 1) / TILE;
    dim3 mgrid((unsigned)min(tiles, MASK_GRID_X), (unsigned)min(tiles, MASK_GRID_Y));
    mask_kernel<<<mgrid, TILE, 0, s>>>(c->sboxes, c->scls, c->n_candidates, params->iou_threshold,
                                       params->class_agnostic, c->mask);
    ZV_CUDA(cudaGetLastError(), "launching the IoU matrix");
    zv_map map = zv_map_from(transform);
    reduce_kernel<<<1, 32, (size_t)tiles * sizeof(uint64_t), s>>>(c->mask, c->n_candidates, c->sboxes, c->sscores,
                                                                  c->scls, top_k, map, c->result);
    ZV_CUDA(cudaGetLastError(), "launching the NMS pass");
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
