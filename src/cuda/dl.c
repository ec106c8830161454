/* dl.c: cuDNN and cuBLAS opened on first use (see dl.h for why).
 *
 * Each function below has the name and, through the headers' own prototypes, the exact type of
 * the cuDNN or cuBLAS function it stands for; a definition that disagrees with the header does
 * not compile. It forwards to the real function, found by dlsym in the library opened by
 * cu_load_cudnn / cu_load_cublas (or, should a call come first, by the forwarder itself). When
 * the library cannot be opened the forwarder returns the library's NOT_INITIALIZED status,
 * which the callers' CUDNN_TRY / CUBLAS_TRY turn into an error status: never a crash.
 *
 * The definitions are hidden (the library is compiled with -fvisibility=hidden): they bind the
 * library's own calls, are not exported from libzcinfer.so, and so can never stand in for the
 * real functions when cuDNN's or cuBLAS's own code, or the application's, calls them.
 *
 * A new cuDNN or cuBLAS call in the code base needs its line in a table here; the link fails
 * (undefined symbol) until it has one. */
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda/dl.h"

#define DL_STR_(x) #x
#define DL_STR(x) DL_STR_(x)

/* The sonames of the major versions compiled against: another major version has another ABI. */
#define CUDNN_SONAME "libcudnn.so." DL_STR(CUDNN_MAJOR)
#define CUBLAS_SONAME "libcublas.so." DL_STR(CUBLAS_VER_MAJOR)

/* Every cuDNN function zcinfer calls that returns a cudnnStatus_t: X(name, parameters, arguments). */
#define CUDNN_STATUS_FUNCS(X)                                                                      \
    X(cudnnCreate, (cudnnHandle_t * handle), (handle))                                             \
    X(cudnnDestroy, (cudnnHandle_t handle), (handle))                                              \
    X(cudnnSetStream, (cudnnHandle_t handle, cudaStream_t streamId), (handle, streamId))           \
    X(cudnnCreateTensorDescriptor, (cudnnTensorDescriptor_t * d), (d))                             \
    X(cudnnDestroyTensorDescriptor, (cudnnTensorDescriptor_t d), (d))                              \
    X(cudnnCreateFilterDescriptor, (cudnnFilterDescriptor_t * d), (d))                             \
    X(cudnnDestroyFilterDescriptor, (cudnnFilterDescriptor_t d), (d))                              \
    X(cudnnCreateConvolutionDescriptor, (cudnnConvolutionDescriptor_t * d), (d))                   \
    X(cudnnDestroyConvolutionDescriptor, (cudnnConvolutionDescriptor_t d), (d))                    \
    X(cudnnSetTensor4dDescriptor,                                                                  \
      (cudnnTensorDescriptor_t d, cudnnTensorFormat_t format, cudnnDataType_t dataType, int n, int c, int h, int w), \
      (d, format, dataType, n, c, h, w))                                                           \
    X(cudnnSetTensorNdDescriptor,                                                                  \
      (cudnnTensorDescriptor_t d, cudnnDataType_t dataType, int nbDims, const int dimA[], const int strideA[]), \
      (d, dataType, nbDims, dimA, strideA))                                                        \
    X(cudnnSetFilter4dDescriptor,                                                                  \
      (cudnnFilterDescriptor_t d, cudnnDataType_t dataType, cudnnTensorFormat_t format, int k, int c, int h, int w), \
      (d, dataType, format, k, c, h, w))                                                           \
    X(cudnnSetFilterNdDescriptor,                                                                  \
      (cudnnFilterDescriptor_t d, cudnnDataType_t dataType, cudnnTensorFormat_t format, int nbDims,  \
       const int filterDimA[]),                                                                    \
      (d, dataType, format, nbDims, filterDimA))                                                   \
    X(cudnnSetConvolutionNdDescriptor,                                                             \
      (cudnnConvolutionDescriptor_t d, int arrayLength, const int padA[], const int filterStrideA[], \
       const int dilationA[], cudnnConvolutionMode_t mode, cudnnDataType_t computeType),           \
      (d, arrayLength, padA, filterStrideA, dilationA, mode, computeType))                         \
    X(cudnnSetConvolutionGroupCount, (cudnnConvolutionDescriptor_t d, int groupCount), (d, groupCount)) \
    X(cudnnSetConvolutionMathType, (cudnnConvolutionDescriptor_t d, cudnnMathType_t mathType), (d, mathType)) \
    X(cudnnGetConvolutionForwardAlgorithm_v7,                                                      \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc, \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc,        \
       const int requestedAlgoCount, int *returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t *perfResults), \
      (handle, srcDesc, filterDesc, convDesc, destDesc, requestedAlgoCount, returnedAlgoCount, perfResults)) \
    X(cudnnFindConvolutionForwardAlgorithmEx,                                                      \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void *x,                   \
       const cudnnFilterDescriptor_t wDesc, const void *w, const cudnnConvolutionDescriptor_t convDesc, \
       const cudnnTensorDescriptor_t yDesc, void *y, const int requestedAlgoCount, int *returnedAlgoCount, \
       cudnnConvolutionFwdAlgoPerf_t *perfResults, void *workSpace, size_t workSpaceSizeInBytes),  \
      (handle, xDesc, x, wDesc, w, convDesc, yDesc, y, requestedAlgoCount, returnedAlgoCount, perfResults, \
       workSpace, workSpaceSizeInBytes))                                                           \
    X(cudnnGetConvolutionForwardWorkspaceSize,                                                     \
      (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc, \
       const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,           \
       cudnnConvolutionFwdAlgo_t algo, size_t *sizeInBytes),                                       \
      (handle, xDesc, wDesc, convDesc, yDesc, algo, sizeInBytes))                                  \
    X(cudnnConvolutionForward,                                                                     \
      (cudnnHandle_t handle, const void *alpha, const cudnnTensorDescriptor_t xDesc, const void *x, \
       const cudnnFilterDescriptor_t wDesc, const void *w, const cudnnConvolutionDescriptor_t convDesc, \
       cudnnConvolutionFwdAlgo_t algo, void *workSpace, size_t workSpaceSizeInBytes, const void *beta, \
       const cudnnTensorDescriptor_t yDesc, void *y),                                              \
      (handle, alpha, xDesc, x, wDesc, w, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, yDesc, y)) \
    X(cudnnBackendCreateDescriptor,                                                                \
      (cudnnBackendDescriptorType_t descriptorType, cudnnBackendDescriptor_t * descriptor),        \
      (descriptorType, descriptor))                                                                \
    X(cudnnBackendDestroyDescriptor, (cudnnBackendDescriptor_t descriptor), (descriptor))          \
    X(cudnnBackendFinalize, (cudnnBackendDescriptor_t descriptor), (descriptor))                   \
    X(cudnnBackendSetAttribute,                                                                    \
      (cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t attributeName,             \
       cudnnBackendAttributeType_t attributeType, int64_t elementCount, const void *arrayOfElements), \
      (descriptor, attributeName, attributeType, elementCount, arrayOfElements))                   \
    X(cudnnBackendGetAttribute,                                                                    \
      (cudnnBackendDescriptor_t const descriptor, cudnnBackendAttributeName_t attributeName,       \
       cudnnBackendAttributeType_t attributeType, int64_t requestedElementCount, int64_t *elementCount, \
       void *arrayOfElements),                                                                     \
      (descriptor, attributeName, attributeType, requestedElementCount, elementCount, arrayOfElements)) \
    X(cudnnBackendExecute,                                                                         \
      (cudnnHandle_t handle, cudnnBackendDescriptor_t executionPlan, cudnnBackendDescriptor_t variantPack), \
      (handle, executionPlan, variantPack))

/* Every cuBLAS function zcinfer calls that returns a cublasStatus_t, by its symbol's name
 * (cublas_v2.h maps cublasCreate to cublasCreate_v2 and so on). */
#define CUBLAS_STATUS_FUNCS(X)                                                                     \
    X(cublasCreate_v2, (cublasHandle_t * handle), (handle))                                        \
    X(cublasDestroy_v2, (cublasHandle_t handle), (handle))                                         \
    X(cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t streamId), (handle, streamId))      \
    X(cublasSetWorkspace_v2, (cublasHandle_t handle, void *workspace, size_t workspaceSizeInBytes), \
      (handle, workspace, workspaceSizeInBytes))                                                   \
    X(cublasSetPointerMode_v2, (cublasHandle_t handle, cublasPointerMode_t mode), (handle, mode))  \
    X(cublasSetMathMode, (cublasHandle_t handle, cublasMath_t mode), (handle, mode))               \
    X(cublasGemmEx,                                                                                \
      (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, \
       const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B, cudaDataType Btype, \
       int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType, \
       cublasGemmAlgo_t algo),                                                                     \
      (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, computeType, algo)) \
    X(cublasGemmStridedBatchedEx,                                                                  \
      (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, \
       const void *alpha, const void *A, cudaDataType Atype, int lda, long long int strideA, const void *B, \
       cudaDataType Btype, int ldb, long long int strideB, const void *beta, void *C, cudaDataType Ctype, \
       int ldc, long long int strideC, int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo), \
      (handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta, C, Ctype, \
       ldc, strideC, batchCount, computeType, algo))

/* The functions of other return types, as above. Their forwarders are written out below. */
#define CUDNN_OTHER_FUNCS(X)                                                                       \
    X(cudnnGetErrorString, (cudnnStatus_t status), (status))                                       \
    X(cudnnGetVersion, (void), ())
#define CUBLAS_OTHER_FUNCS(X)                                                                      \
    X(cublasGetStatusString, (cublasStatus_t status), (status))                                    \
    X(cublasGetStatusName, (cublasStatus_t status), (status))

/* The real functions, filled by resolve_* before the library is marked ready. */
#define DL_POINTER(name, params, args) __typeof__(name) *name;
static struct {
    CUDNN_STATUS_FUNCS(DL_POINTER)
    CUDNN_OTHER_FUNCS(DL_POINTER)
} cudnn_fn;
static struct {
    CUBLAS_STATUS_FUNCS(DL_POINTER)
    CUBLAS_OTHER_FUNCS(DL_POINTER)
} cublas_fn;

/* ---------------------------------------------------------------- loading */

/* One library: what it is called, how to find it, and whether it is open. */
typedef struct {
    const char *what;   /* "cuDNN", for messages */
    const char *soname; /* what dlopen is given */
    const char *hint;   /* what the user can do when it cannot be opened */
    bool (*resolve)(void *handle, const char **missing);
    pthread_mutex_t lock; /* serialises the one attempt to open it */
    bool tried;           /* under lock: an attempt was made (its outcome is final) */
    atomic_bool ready;    /* every pointer is filled; set with release once, read with acquire */
    char error[600];      /* under lock: why it could not be opened, repeated by later calls */
} dl_lib;

/* dlsym's object pointer is copied into the function pointer's bytes: the conversion POSIX
 * guarantees, without the cast that C leaves undefined or an lvalue of the wrong type. */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "dlsym needs function pointers the size of void *");
#define DL_RESOLVE(fns, name)                                                                      \
    {                                                                                              \
        void *sym_ = dlsym(handle, #name);                                                         \
        if (!sym_) {                                                                               \
            *missing = #name;                                                                      \
            return false;                                                                          \
        }                                                                                          \
        memcpy(&fns.name, &sym_, sizeof sym_);                                                     \
    }
#define CUDNN_RESOLVE(name, params, args) DL_RESOLVE(cudnn_fn, name)
#define CUBLAS_RESOLVE(name, params, args) DL_RESOLVE(cublas_fn, name)

static bool resolve_cudnn(void *handle, const char **missing)
{
    CUDNN_STATUS_FUNCS(CUDNN_RESOLVE)
    CUDNN_OTHER_FUNCS(CUDNN_RESOLVE)
    return true;
}

static bool resolve_cublas(void *handle, const char **missing)
{
    CUBLAS_STATUS_FUNCS(CUBLAS_RESOLVE)
    CUBLAS_OTHER_FUNCS(CUBLAS_RESOLVE)
    return true;
}

static dl_lib cudnn_lib = {
    .what = "cuDNN",
    .soname = CUDNN_SONAME,
    .hint = "install cuDNN " DL_STR(CUDNN_MAJOR) " or add the folder that holds " CUDNN_SONAME " to LD_LIBRARY_PATH",
    .resolve = resolve_cudnn,
    .lock = PTHREAD_MUTEX_INITIALIZER,
};
static dl_lib cublas_lib = {
    .what = "cuBLAS",
    .soname = CUBLAS_SONAME,
    .hint = "install cuBLAS " DL_STR(CUBLAS_VER_MAJOR) " (CUDA toolkit " DL_STR(CUBLAS_VER_MAJOR)
            ") or add the folder that holds " CUBLAS_SONAME " to LD_LIBRARY_PATH",
    .resolve = resolve_cublas,
    .lock = PTHREAD_MUTEX_INITIALIZER,
};

zci_status cu_dl_open(const char *what, const char *soname, const char *hint, void **handle)
{
    /* RTLD_LOCAL: its symbols stay out of the global namespace, where they could bind other
     * code's references; RTLD_NOW: a broken installation fails here, not in the middle of a run */
    *handle = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (*handle) return ZCI_OK;
    const char *why = dlerror();
    return zci_error(ZCI_NO_DEVICE, "%s could not be loaded (%s); %s", what, why ? why : soname, hint);
}

/* The path the loader found the library at, for the verbose log. */
static const char *dl_path(void *handle)
{
    struct link_map *map = NULL;
    if (dlinfo(handle, RTLD_DI_LINKMAP, &map) != 0 || !map || !map->l_name || !*map->l_name) return "?";
    return map->l_name;
}

/* Under L->lock, the one attempt: open, resolve, mark ready; else keep the message. */
static void dl_attempt(dl_lib *L, int verbose)
{
    void *h = NULL;
    if (cu_dl_open(L->what, L->soname, L->hint, &h) != ZCI_OK) {
        snprintf(L->error, sizeof L->error, "%s", zci_last_error());
        return;
    }
    const char *missing = "?";
    if (!L->resolve(h, &missing)) {
        /* an older release than the headers compiled against, or not the library at all */
        snprintf(L->error, sizeof L->error, "%s could not be loaded (%s, found at %s, has no %s); %s", L->what,
                 L->soname, dl_path(h), missing, L->hint);
        dlclose(h);
        return;
    }
    /* h is never closed: the forwarders may be called until the process ends */
    atomic_store_explicit(&L->ready, true, memory_order_release);
    if (L == &cudnn_lib) {
        size_t v = cudnn_fn.cudnnGetVersion();
        zci_log(verbose, "CUDA: cuDNN %zu.%zu.%zu loaded on first use from %s", v / 10000, v % 10000 / 100, v % 100,
                dl_path(h));
    } else {
        zci_log(verbose, "CUDA: %s loaded on first use from %s", L->what, dl_path(h));
    }
}

static zci_status dl_load(dl_lib *L, int verbose)
{
    if (atomic_load_explicit(&L->ready, memory_order_acquire)) return ZCI_OK;
    pthread_mutex_lock(&L->lock);
    if (!L->tried) {
        L->tried = true;
        dl_attempt(L, verbose);
    }
    bool ok = atomic_load_explicit(&L->ready, memory_order_relaxed);
    pthread_mutex_unlock(&L->lock);
    /* L->error is written once, under the lock, before tried is seen set: stable from here on */
    return ok ? ZCI_OK : zci_error(ZCI_NO_DEVICE, "%s", L->error);
}

zci_status cu_load_cudnn(int verbose) { return dl_load(&cudnn_lib, verbose); }
zci_status cu_load_cublas(int verbose) { return dl_load(&cublas_lib, verbose); }

/* ---------------------------------------------------------------- forwarders */

/* A forwarder's library is normally open already (the backend calls cu_load_* first); if not,
 * it tries once, and reports failure in the library's own terms. */
static inline bool dl_ready(dl_lib *L)
{
    return atomic_load_explicit(&L->ready, memory_order_acquire) || dl_load(L, 0) == ZCI_OK;
}

#define CUDNN_FORWARD(name, params, args)                                                          \
    cudnnStatus_t name params                                                                      \
    {                                                                                              \
        if (!dl_ready(&cudnn_lib)) return CUDNN_STATUS_NOT_INITIALIZED;                            \
        return cudnn_fn.name args;                                                                 \
    }
#define CUBLAS_FORWARD(name, params, args)                                                         \
    cublasStatus_t name params                                                                     \
    {                                                                                              \
        if (!dl_ready(&cublas_lib)) return CUBLAS_STATUS_NOT_INITIALIZED;                          \
        return cublas_fn.name args;                                                                \
    }
CUDNN_STATUS_FUNCS(CUDNN_FORWARD)
CUBLAS_STATUS_FUNCS(CUBLAS_FORWARD)

const char *cudnnGetErrorString(cudnnStatus_t status)
{
    if (!dl_ready(&cudnn_lib)) return "cuDNN is not loaded";
    return cudnn_fn.cudnnGetErrorString(status);
}

size_t cudnnGetVersion(void)
{
    if (!dl_ready(&cudnn_lib)) return 0;
    return cudnn_fn.cudnnGetVersion();
}

const char *cublasGetStatusString(cublasStatus_t status)
{
    if (!dl_ready(&cublas_lib)) return "cuBLAS is not loaded";
    return cublas_fn.cublasGetStatusString(status);
}

const char *cublasGetStatusName(cublasStatus_t status)
{
    if (!dl_ready(&cublas_lib)) return "CUBLAS_NOT_LOADED";
    return cublas_fn.cublasGetStatusName(status);
}
