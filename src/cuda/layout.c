/* layout.c: NHWC inside FP16 sessions (see cuda_internal.h).
 *
 * Walking the nodes in execution order, a node runs in NHWC when its op can (cu_op.nhwc) and
 * either it is a 2-D convolution or one of its 4-D inputs already is in NHWC; a node that writes
 * a model output runs in NCHW (the caller's buffer is NCHW). Every tensor takes the layout of the
 * node that produces it; model inputs and constants are NCHW. Where a reader needs the other
 * layout, the tensor gets a converted copy, made right after its producer runs (for model inputs
 * at the start of the run; for constants once, here). In YOLO-style networks that leaves one
 * conversion at the input.
 *
 * A detection head reshapes its convolution's output (N, A*B, H, W) to (N, A, B, H, W) and
 * transposes that to (N, A, H, W, B). In NHWC the bytes are (N, H, W, A, B): the Transpose reads
 * them through strides (view_nhwc), and the NCHW copy of the convolution's output is not made. */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_internal.h"
#include "ops/rowmap.h"
#include "ops/conv.h"

int cu_layout_matters(const zci_tensor *t)
{
    return t->ndim == 4 && t->dims[1] > 1 && t->dims[2] * t->dims[3] > 1;
}

void cu_physical_dims(const zci_tensor *t, int nhwc, int64_t *dims)
{
    for (int d = 0; d < t->ndim; d++) dims[d] = t->dims[d];
    if (nhwc && t->ndim == 4) {
        dims[1] = t->dims[2];
        dims[2] = t->dims[3];
        dims[3] = t->dims[1];
    }
}

static int is_conv(const zci_node *n) { return !strcmp(n->op_type, "Conv"); }

/* Convolution weights and bias are read as filters, not as activations. */
static int activation_input(const zci_node *n, int k) { return !(is_conv(n) && (k == 1 || k == 2)); }

static int node_layout(const cu_ctx *c, const zci_node *n)
{
    const zci_graph *g = c->g;
    const cu_node *cn = cu_node_of(c, n);
    if (!cn->op || !cn->op->nhwc || n->n_in > 64) return CU_NCHW;
    for (int o = 0; o < n->n_out; o++) {
        int t = n->out[o];
        if (t >= 0 && g->tensors[t].is_output && cu_layout_matters(&g->tensors[t])) return CU_NCHW;
    }
    if (is_conv(n))
        return ZCI_IN(g, n, 0)->ndim == 4 && ZCI_IN(g, n, 1)->kind == ZCI_TENSOR_CONSTANT ? CU_NHWC : CU_NCHW;
    for (int k = 0; k < n->n_in; k++) {
        int t = n->in[k];
        if (t >= 0 && c->lay[t] == CU_NHWC) return CU_NHWC;
    }
    return CU_NCHW;
}

/* dst (layout !nhwc) = src (layout nhwc) for 4-D tensor t. */
static zci_status convert_layout(const cu_ctx *c, int t, const void *src, int src_nhwc, void *dst, cudaStream_t s)
{
    const zci_tensor *x = &c->g->tensors[t];
    const int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    if (!src_nhwc && c->alt_c && c->alt_c[t]) return cu_nchw_to_nhwc_pad(src, dst, N, C, H * W, c->alt_c[t], cu_esize(c, t), s);
    cu_gather_plan p;
    memset(&p, 0, sizeof p);
    p.nd = 4;
    if (src_nhwc) { /* out (N, C, H, W) from NHWC strides */
        int64_t d[4] = {N, C, H, W}, st[4] = {H * W * C, 1, W * C, C};
        memcpy(p.dims, d, sizeof d);
        memcpy(p.stride, st, sizeof st);
    } else { /* out (N, H, W, C) from NCHW strides */
        int64_t d[4] = {N, H, W, C}, st[4] = {C * H * W, W, 1, H * W};
        memcpy(p.dims, d, sizeof d);
        memcpy(p.stride, st, sizeof st);
    }
    cu_gather_simplify(&p);
    return cu_strided_copy(src, dst, &p, cu_esize(c, t), s);
}

/* FP16 tensor-core convolutions want a multiple of 8 input channels; an image (3 channels) gets
 * a cuDNN kernel without them, the slowest convolution of a YOLO model. So an NCHW tensor with
 * fewer than 8 channels whose NHWC copy is read only as the input of ungrouped convolutions gets
 * that copy padded with zero channels to 8, and those convolutions get zero weights to match. */
static void pad_channels(cu_ctx *c)
{
    const zci_graph *g = c->g;
    for (int t = 0; t < g->n_tensors; t++) {
        const zci_tensor *x = &g->tensors[t];
        if (!c->need_alt[t] || c->lay[t] != CU_NCHW || x->dims[1] >= 8 || c->dt[t] != ZCI_FLOAT16) continue;
        int ok = 1;
        for (int p = 0; ok && p < g->n_order; p++) {
            const zci_node *n = &g->nodes[g->order[p]];
            const cu_node *cn = &c->nodes[g->order[p]];
            for (int k = 0; ok && k < n->n_in && k < 64; k++) {
                if (n->in[k] != t || !(cn->alt_in >> k & 1)) continue;
                const zci_conv_params *cp = n->params;
                ok = is_conv(n) && k == 0 && cp && cp->group == 1;
            }
        }
        if (ok) c->alt_c[t] = 8;
    }
}

/* View node n reshapes (N, C, H, W) to (N, A, B, H, W), A * B = C, and only Transposes and
 * RowMaps (as a source) read it: both read any strides. */
static int channel_split_for_transposes(const cu_ctx *c, const zci_node *n)
{
    const zci_graph *g = c->g;
    if (strcmp(n->op_type, "Reshape") || n->in[0] < 0 || n->out[0] < 0) return 0;
    const zci_tensor *x = &g->tensors[n->in[0]], *y = &g->tensors[n->out[0]];
    if (x->ndim != 4 || y->ndim != 5 || y->is_output) return 0;
    if (y->dims[0] != x->dims[0] || y->dims[1] * y->dims[2] != x->dims[1] || y->dims[3] != x->dims[2] ||
        y->dims[4] != x->dims[3])
        return 0;
    int readers = 0;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *r = &g->nodes[g->order[p]];
        for (int k = 0; k < r->n_in; k++) {
            if (r->in[k] != n->out[0]) continue;
            const zci_rowmap_params *rp = !strcmp(r->op_type, "RowMap") ? r->params : NULL;
            int strided = (k == 0 && !strcmp(r->op_type, "Transpose")) || (rp && k < rp->n_parts);
            if (!strided || !c->nodes[g->order[p]].op) return 0;
            readers++;
        }
    }
    return readers > 0;
}

int cu_view_source_ld(const cu_ctx *c, int t)
{
    if (!c->view_nhwc || t < 0 || !c->view_nhwc[t] || !c->slice_ld) return 0;
    const zci_tensor *y = &c->g->tensors[t];
    const int x = y->producer >= 0 ? c->g->nodes[y->producer].in[0] : -1;
    return x >= 0 ? c->slice_ld[x] : 0;
}

int cu_view_nhwc_strides(const cu_ctx *c, int t, int64_t *strides)
{
    if (!c->view_nhwc || t < 0 || !c->view_nhwc[t]) return 0;
    const zci_tensor *y = &c->g->tensors[t];
    const int64_t A = y->dims[1], B = y->dims[2], H = y->dims[3], W = y->dims[4];
    const int ld = cu_view_source_ld(c, t);
    const int64_t C = ld ? ld : A * B; /* a padded source (cu_plan_padded_heads): its pixel stride */
    strides[0] = H * W * C;
    strides[1] = B;
    strides[2] = 1;
    strides[3] = W * C;
    strides[4] = C;
    return 1;
}

zci_status cu_decide_layout(cu_ctx *c)
{
    const zci_graph *g = c->g;
    const int nt = g->n_tensors;
    c->lay = zci_calloc((size_t)nt + 1, 1, "layouts");
    c->alt = zci_calloc((size_t)nt + 1, sizeof(void *), "layouts");
    c->need_alt = zci_calloc((size_t)nt + 1, 1, "layouts");
    c->alt_c = zci_calloc((size_t)nt + 1, sizeof(int), "layouts");
    c->view_nhwc = zci_calloc((size_t)nt + 1, 1, "layouts");
    if (!c->lay || !c->alt || !c->need_alt || !c->alt_c || !c->view_nhwc) return ZCI_OUT_OF_MEMORY;
    /* FP32 stays NCHW: cuDNN's FP32 kernels (FMA math, no tensor cores) need no transposes */
    if (!c->fp16 || getenv("ZCI_CUDA_NCHW")) return ZCI_OK;
    unsigned char *need = c->need_alt;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        cu_node *cn = &c->nodes[g->order[p]];
        if (!cn->op) { /* an aliased view reinterprets its input's NCHW bytes */
            if (n->in[0] >= 0 && c->lay[n->in[0]] == CU_NHWC) {
                if (channel_split_for_transposes(c, n)) c->view_nhwc[n->out[0]] = 1;
                else need[n->in[0]] = 1;
            }
            continue;
        }
        cn->nhwc = node_layout(c, n);
        for (int k = 0; k < n->n_in && k < 64; k++) {
            int t = n->in[k];
            if (t < 0 || !activation_input(n, k) || !cu_layout_matters(&g->tensors[t])) continue;
            if (c->lay[t] != cn->nhwc) {
                cn->alt_in |= (uint64_t)1 << k;
                need[t] = 1;
            }
        }
        for (int o = 0; o < n->n_out; o++) {
            int t = n->out[o];
            if (t >= 0) c->lay[t] = cn->nhwc && cu_layout_matters(&g->tensors[t]) ? CU_NHWC : CU_NCHW;
        }
    }
    if (!getenv("ZCI_CUDA_NO_PAD")) pad_channels(c);
    return ZCI_OK;
}

int cu_weights_only(const cu_ctx *c, int t)
{
    const zci_graph *g = c->g;
    if (!c->lay || g->tensors[t].is_output) return 0;
    int readers = 0;
    for (int p = 0; p < g->n_order; p++) {
        const zci_node *n = &g->nodes[g->order[p]];
        for (int k = 0; k < n->n_in; k++) {
            if (n->in[k] != t) continue;
            if (!(k == 1 && is_conv(n) && c->nodes[g->order[p]].nhwc)) return 0;
            readers++;
        }
    }
    return readers > 0;
}

zci_status cu_plan_layout(cu_ctx *c)
{
    const zci_graph *g = c->g;
    const int nt = g->n_tensors;
    const unsigned char *need = c->need_alt;
    zci_status st = ZCI_OK;
    int converted = 0;
    for (int t = 0; st == ZCI_OK && t < nt; t++) {
        if (!need[t]) continue;
        converted++;
        size_t elems = (size_t)cu_numel(c, t);
        if (c->alt_c[t]) elems = elems / (size_t)g->tensors[t].dims[1] * (size_t)c->alt_c[t];
        st = cu_malloc(c, elems * cu_esize(c, t), g->tensors[t].name, &c->alt[t]);
        if (st == ZCI_OK && g->tensors[t].kind == ZCI_TENSOR_CONSTANT) {
            st = convert_layout(c, t, c->ptr[t], c->lay[t], c->alt[t], c->own_stream);
            if (st == ZCI_OK) {
                cudaError_t e = cudaStreamSynchronize(c->own_stream);
                if (e != cudaSuccess) st = cu_cuda_error(e, "cudaStreamSynchronize");
            }
        }
    }
    if (st == ZCI_OK && c->verbose) {
        int nodes = 0, views = 0;
        for (int p = 0; p < g->n_order; p++) nodes += c->nodes[g->order[p]].nhwc;
        for (int t = 0; t < nt; t++) views += c->view_nhwc[t];
        zci_log(1, "CUDA layout: %d of %d nodes run in NHWC, %d tensors converted, %d views read NHWC bytes", nodes,
                g->n_order, converted, views);
    }
    return st;
}

zci_status cu_launch_node(cu_ctx *c, int p, cudaStream_t s)
{
    const zci_graph *g = c->g;
    const int ni = g->order[p];
    const zci_node *n = &g->nodes[ni];
    cu_node *cn = &c->nodes[ni];
    if (cn->op && !(c->capture_body && ni == c->tail_node)) {
        zci_status st = cn->op->launch(c, n, cn->state, s);
        if (st != ZCI_OK) return zci_error_prefix(st, "%s", zci_node_desc(g, n));
    }
    for (int o = 0; o < n->n_out; o++) {
        int t = n->out[o];
        if (t >= 0 && c->alt[t] && cu_numel(c, t)) {
            zci_status st = convert_layout(c, t, c->ptr[t], c->lay[t], c->alt[t], s);
            if (st != ZCI_OK) return zci_error_prefix(st, "%s (layout conversion)", zci_node_desc(g, n));
        }
    }
    zci_status st = cu_launch_early_rows(c, ni, s);
    if (st != ZCI_OK) return zci_error_prefix(st, "%s (early output rows)", zci_node_desc(g, n));
    return ZCI_OK;
}

zci_status cu_launch_prologue(cu_ctx *c, cudaStream_t s)
{
    const zci_graph *g = c->g;
    for (int i = 0; i < g->n_inputs; i++) {
        int t = g->inputs[i];
        if (c->capture_body && c->in_head && c->in_head[i]) continue; /* the input edge writes it */
        if (c->alt[t] && cu_numel(c, t)) ZCI_TRY(convert_layout(c, t, c->ptr[t], c->lay[t], c->alt[t], s));
    }
    return ZCI_OK;
}

zci_status cu_plan_input_heads(cu_ctx *c)
{
    const zci_graph *g = c->g;
    const char *env = getenv("ZCI_CUDA_NO_TAIL");
    if ((env && *env == '1') || !c->s->opts.use_cuda_graph || !c->alt_c || !g->n_inputs) return ZCI_OK;
    c->in_head = zci_calloc((size_t)g->n_inputs, 1, "input heads");
    if (!c->in_head) return ZCI_OUT_OF_MEMORY;
    for (int i = 0; i < g->n_inputs; i++) {
        const int t = g->inputs[i];
        const zci_tensor *x = &g->tensors[t];
        const zci_dtype io = c->s->in_info[i].dtype;
        if (!c->alt[t] || !c->alt_c[t] || c->lay[t] != CU_NCHW || x->ndim != 4 || x->is_output ||
            c->dt[t] != ZCI_FLOAT16 || (io != ZCI_FLOAT32 && io != ZCI_FLOAT16))
            continue;
        int only_alt = 1; /* every reader takes the NHWC copy */
        for (int p = 0; p < g->n_order && only_alt; p++) {
            const zci_node *n = &g->nodes[g->order[p]];
            for (int k = 0; k < n->n_in; k++)
                if (n->in[k] == t && !(k < 64 && (c->nodes[g->order[p]].alt_in >> k & 1))) only_alt = 0;
        }
        for (int o = 0; o < g->n_outputs; o++) only_alt &= g->outputs[o] != t;
        c->in_head[i] = (unsigned char)only_alt;
        if (only_alt)
            zci_log(c->verbose, "CUDA input head: '%s' goes from the caller's buffer to its padded NHWC copy in one pass",
                    x->name);
    }
    return ZCI_OK;
}

zci_status cu_input_head(cu_ctx *c, int i, const void *src, zci_dtype st, cudaStream_t s)
{
    const int t = c->g->inputs[i];
    const zci_tensor *x = &c->g->tensors[t];
    return cu_nchw_to_nhwc_pad_as(src, st, c->alt[t], c->dt[t], x->dims[0], x->dims[1], x->dims[2] * x->dims[3], c->alt_c[t],
                                  s);
}

void cu_reorder_krsc(const zci_tensor *w, int64_t cp, int half, void *host)
{
    const int64_t M = w->dims[0], C = w->dims[1], R = w->dims[2], S = w->dims[3];
#pragma omp parallel for schedule(static) if (M * C * R * S > 65536)
    for (int64_t m = 0; m < M; m++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t q = 0; q < S; q++) {
                    size_t src = (size_t)(((m * C + ch) * R + r) * S + q), dst = (size_t)(((m * R + r) * S + q) * cp + ch);
                    float v = w->dtype == ZCI_FLOAT16 ? zci_f16_to_f32(((const uint16_t *)w->data)[src])
                                                      : ((const float *)w->data)[src];
                    if (half) ((uint16_t *)host)[dst] = zci_f32_to_f16(v);
                    else ((float *)host)[dst] = v;
                }
}

/* One input of Concat n: a convolution's output that only n reads, in NHWC FP16, eligible for
 * our kernel (which writes into a wider buffer; cuDNN's fused graph is given the wider strides
 * too, and our kernel stands in where cuDNN refuses them). */
static int concat_input_ok(const cu_ctx *c, const zci_node *n, int k)
{
    const zci_graph *g = c->g;
    const int t = n->in[k];
    if (t < 0) return 0;
    const zci_tensor *x = &g->tensors[t];
    if (x->kind != ZCI_TENSOR_ACTIVATION || x->is_output || x->producer < 0 || x->n_consumers != 1) return 0;
    if (c->alias[t] >= 0 || c->lay[t] != CU_NHWC || c->need_alt[t] || c->dt[t] != ZCI_FLOAT16 || x->ndim != 4) return 0;
    for (int j = 0; j < n->n_in; j++)
        if (j != k && n->in[j] == t) return 0;
    const zci_node *p = &g->nodes[x->producer];
    if (strcmp(p->op_type, "Conv") || p->n_out < 1 || p->out[0] != t || !cu_node_of(c, p)->op) return 0;
    return cu_conv_may_write_slice(c, p);
}

zci_status cu_plan_concat_in_place(cu_ctx *c)
{
    const zci_graph *g = c->g;
    const char *env = getenv("ZCI_CUDA_NO_CONCAT_IN_PLACE");
    if ((env && *env == '1') || !c->fp16) return ZCI_OK;
    c->alias_off = zci_calloc((size_t)g->n_tensors + 1, sizeof *c->alias_off, "memory plan");
    c->slice_ld = zci_calloc((size_t)g->n_tensors + 1, sizeof *c->slice_ld, "memory plan");
    if (!c->alias_off || !c->slice_ld) return ZCI_OUT_OF_MEMORY;
    for (int p = 0; p < g->n_order; p++) {
        const int ni = g->order[p];
        const zci_node *n = &g->nodes[ni];
        if (strcmp(n->op_type, "Concat") || *n->domain || !cu_node_of(c, n)->op || !cu_nhwc(c, n) || n->n_out < 1) continue;
        const int yt = n->out[0];
        const zci_tensor *y = &g->tensors[yt];
        if (y->ndim != 4 || y->is_output || y->kind != ZCI_TENSOR_ACTIVATION || c->alias[yt] >= 0 || c->lay[yt] != CU_NHWC)
            continue;
        int64_t axis = zci_attr_int(n, "axis", 0, NULL);
        if (axis < 0) axis += 4;
        if (axis != 1) continue;
        int ok = n->n_in > 0;
        int64_t c0 = 0;
        for (int k = 0; k < n->n_in && ok; k++) {
            ok = concat_input_ok(c, n, k) && c0 % 8 == 0; /* 16-byte aligned slices */
            if (ok) c0 += g->tensors[n->in[k]].dims[1];
        }
        if (!ok || c0 != y->dims[1] || y->dims[1] > INT32_MAX) continue;
        c0 = 0;
        for (int k = 0; k < n->n_in; k++) {
            const int t = n->in[k];
            c->alias[t] = yt;
            c->alias_off[t] = (size_t)c0 * cu_esize(c, t);
            c->slice_ld[t] = (int)y->dims[1];
            c0 += g->tensors[t].dims[1];
        }
        c->nodes[ni].op = NULL; /* nothing to launch: its inputs land in place */
        c->concats_in_place++;
    }
    zci_log(c->verbose, "CUDA: %d Concats written in place by their producers", c->concats_in_place);
    return ZCI_OK;
}

/* Convolutions whose output channels are not a multiple of 8 (the YOLO heads' 255) write every
 * row of 255 halves at an odd alignment: the epilogue falls back to 2-byte stores, and the 80x80
 * head convolution at batch 32 took 0.47 ms for 0.16 GB of traffic. When only a head's view
 * (view_nhwc: Transposes and RowMaps through strides) reads such an output, its rows get a
 * channel stride rounded up to 8 (slice_ld, as for a Concat's inputs): the epilogue stores 16
 * bytes at a time, and the readers take the stride from cu_view_nhwc_strides. */
zci_status cu_plan_padded_heads(cu_ctx *c)
{
    const zci_graph *g = c->g;
    const char *env = getenv("ZCI_CUDA_NO_PAD_HEADS");
    if ((env && *env == '1') || !c->fp16 || !c->view_nhwc) return ZCI_OK;
    int padded = 0;
    for (int v = 0; v < g->n_tensors; v++) {
        if (!c->view_nhwc[v] || g->tensors[v].producer < 0) continue;
        const int x = g->nodes[g->tensors[v].producer].in[0];
        if (x < 0) continue;
        const zci_tensor *xt = &g->tensors[x];
        if (xt->ndim != 4 || xt->dims[1] % 8 == 0 || xt->dims[1] > INT32_MAX - 8 || xt->is_output ||
            xt->kind != ZCI_TENSOR_ACTIVATION || xt->producer < 0 || xt->n_consumers != 1 || c->alias[x] >= 0 ||
            c->lay[x] != CU_NHWC || c->need_alt[x] || c->dt[x] != ZCI_FLOAT16)
            continue;
        const zci_node *p = &g->nodes[xt->producer];
        if (strcmp(p->op_type, "Conv") || p->n_out < 1 || p->out[0] != x || !cu_node_of(c, p)->op ||
            !cu_conv_may_write_slice(c, p))
            continue;
        if (!c->slice_ld) {
            c->slice_ld = zci_calloc((size_t)g->n_tensors + 1, sizeof *c->slice_ld, "memory plan");
            if (!c->slice_ld) return ZCI_OUT_OF_MEMORY;
        }
        if (c->slice_ld[x]) continue;
        c->slice_ld[x] = (int)((xt->dims[1] + 7) / 8 * 8);
        padded++;
    }
    zci_log(c->verbose && padded, "CUDA: %d head convolutions write rows padded to 8 channels", padded);
    return ZCI_OK;
}
