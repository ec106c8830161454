/* onnx.h: the ONNX loader: serialized ModelProto -> zci_graph. Knows nothing of devices. */
#ifndef ZCI_ONNX_H
#define ZCI_ONNX_H

#include "graph/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes a ModelProto held in `data` (`size` bytes). External data files are read relative
 * to `base_dir` (NULL = "."); `source` names the model in messages. Symbolic leading dims of
 * graph inputs become `batch`. On success *out is a graph whose tensors carry the model's
 * declared types; ops are not yet resolved (zci_graph_plan does that). */
zci_status zci_onnx_load(const void *data, size_t size, const char *base_dir, const char *source,
                         int64_t batch, zci_graph **out);

/* Decodes one serialized TensorProto (as in the ONNX test data's .pb files) into *out. */
zci_status zci_onnx_load_tensor(const void *data, size_t size, zci_value *out, char **name);

/* Reads a whole file into a malloc'd buffer. */
zci_status zci_read_file(const char *path, void **data, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
