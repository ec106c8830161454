/* dl.h: cuDNN and cuBLAS are opened on first use (dlopen), not linked.
 *
 * Why: a library that links them makes the dynamic loader map and relocate them, and run
 * cuBLASLt's initialisers, at process start, whatever the process does: a CPU-only run of a
 * CUDA build of zcinfer peaked at 330 MB instead of 180 MB. src/cuda/dl.c defines (hidden)
 * every cuDNN and cuBLAS function that zcinfer calls, each forwarding to the real one; the
 * library is opened the first time a CUDA session (or engine check) needs it, by its soname
 * (libcudnn.so.<CUDNN_MAJOR>, libcublas.so.<CUBLAS_VER_MAJOR>, from the headers compiled
 * against), so LD_LIBRARY_PATH and the system's library paths decide where it comes from.
 * Libraries, once open, stay open for the life of the process.
 *
 * This header has no CUDA includes, so that tests can use it. */
#ifndef ZCI_CUDA_DL_H
#define ZCI_CUDA_DL_H

#include "core/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opens cuDNN (cuBLAS) if it is not open yet, resolving every function zcinfer uses. On
 * failure ZCI_NO_DEVICE, with a message that names the library, gives the loader's reason and
 * says how to make it loadable; a failure is remembered (the loader's search paths do not
 * change within a process). With `verbose` (or ZCI_VERBOSE), the call that opens the library
 * logs its version and path. Thread-safe. */
zci_status cu_load_cudnn(int verbose);
zci_status cu_load_cublas(int verbose);

/* The opening step of the two above, apart so that tests can name a library that does not
 * exist: dlopen(soname) into *handle, else ZCI_NO_DEVICE with the message
 * "<what> could not be loaded (<dlerror>); <hint>". */
zci_status cu_dl_open(const char *what, const char *soname, const char *hint, void **handle);

#ifdef __cplusplus
}
#endif

#endif
