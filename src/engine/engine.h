/* engine.h: engine files, the planned model written once and loaded without ONNX parsing or
 * planning (zci_build_engine, zci_session_save_engine; zci_session_create recognises them).
 *
 * Format, version 1. Little-endian throughout; integers are fixed-width; a string is a u32
 * byte count and that many bytes (no NUL, none inside).
 *
 *   magic           8 bytes  ZCI_ENGINE_MAGIC (PNG-style: a text-mode transfer breaks it)
 *   format version  u32      ZCI_ENGINE_FORMAT
 *   library version u32      ZCI_VERSION_NUMBER of the writer
 *   file size       u64      bytes in the whole file, checksum included
 *   planned for     device u32, precision u32, batch i64, fp16_io u8, allow_tf32 u8
 *   device          compute capability u32 (major * 10 + minor), CUDA version u32, cuDNN
 *                   version u32, device name string: zero / "" unless the backend's
 *                   describe_device gave them
 *   built from      string: the model path given to the build, for rebuild hints
 *   summary         opset i32, parameters i64, nodes in the model i32, op type count u32,
 *                   then per op type: name string, count i32
 *   tensors         count u32, then per tensor: name string, kind u8, is_output u8, dtype u32,
 *                   ndim u8, dims i64 x ndim, has data u8, [byte count u64, bytes]
 *   graph inputs    count u32, tensor indices u32
 *   graph outputs   count u32, tensor indices u32
 *   nodes           count u32, in execution order; per node: name, op_type and domain strings,
 *                   opset i32, input count u32, tensor indices i32 (-1 = omitted), output count
 *                   u32, indices i32, attribute count u32, attributes (name string, type u32,
 *                   value by type: FLOAT f32, INT i64, STRING string, FLOATS / INTS count u32
 *                   and values, STRINGS count u32 and strings, TENSOR present u8 and a tensor
 *                   value: dtype u32, ndim u8, dims, byte count u64, bytes; other types: none)
 *   backend blob    byte count u64, bytes (export_blob's state; 0 bytes when none)
 *   checksum        u64: XXH64 (seed 0) of every byte before it
 *
 * The checksum is the last 8 bytes in every format version, so damage is told apart from a
 * version change before anything else is read. The graph is the planned one: constants
 * folded, Conv epilogues fused (as node attributes), dead nodes gone, shapes resolved for the
 * batch. Loading rebuilds it, resolves each node's op and runs its infer again (which
 * re-derives n->params and must arrive at the shapes the file holds). */
#ifndef ZCI_ENGINE_H
#define ZCI_ENGINE_H

#include "core/session.h"

/* Engine files are little-endian, and the reader and writer move weights with memcpy. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "zcinfer's engine files need a little-endian host"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ZCI_ENGINE_MAGIC "\x89ZCE\r\n\x1a\n"
#define ZCI_ENGINE_MAGIC_SIZE 8
#define ZCI_ENGINE_FORMAT 1

/* 1 if the `size` bytes at `data` begin with the engine magic. */
int zci_engine_detect(const void *data, size_t size);

/* What loading an engine file gives the session: a planned graph ready for the backend's
 * prepare, the options it was planned with, the summary of the model it was built from and
 * the backend's blob. */
typedef struct zci_engine_loaded {
    zci_graph *g;         /* ops resolved, params inferred, g->order set, uses counted */
    zci_options opts;     /* the caller's options with the file's device, precision, batch,
                             fp16_io and allow_tf32 */
    zci_summary summary;  /* parameters, nodes_in_model, opset, n_op_types; pointers unset */
    char **op_types;      /* n_op_types names (malloc'd), most frequent first */
    int *op_counts;
    const void *blob;     /* the backend blob, pointing into the file's bytes; NULL if none */
    size_t blob_size;
} zci_engine_loaded;

/* Checks and decodes an engine file held in `size` bytes at `data` (`source` names it in
 * messages): checksum, format and library versions, the device it was planned for against
 * this build and GPU, then the graph, every read bounds-checked. On success *out holds what
 * zci_engine_loaded_free releases (out->blob points into `data`). ZCI_INVALID_MODEL for a
 * damaged or inconsistent file, ZCI_UNSUPPORTED for one planned for another device, GPU
 * architecture or version (the message says what differs and the `zcinfer build` command
 * that makes a fitting one), ZCI_OUT_OF_MEMORY. */
zci_status zci_engine_decode(const void *data, size_t size, const char *source, const zci_options *opts,
                             zci_engine_loaded *out);

/* Frees what zci_engine_decode left in *e (the graph too, unless taken: set e->g = NULL). */
void zci_engine_loaded_free(zci_engine_loaded *e);

/* Serializes session s's planned model into a malloc'd buffer (*data, *size): the bytes of an
 * engine file. `source` is recorded as the model it was built from (NULL = the graph's own). */
zci_status zci_engine_encode(zci_session *s, const char *source, void **data, size_t *size);

/* XXH64 of `size` bytes at `data` (the engine checksum, with seed 0). */
uint64_t zci_xxh64(const void *data, size_t size, uint64_t seed);

#ifdef __cplusplus
}
#endif

#endif
