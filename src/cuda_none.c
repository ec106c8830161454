/* cuda_none.c: what the CUDA entry points say in a build without CUDA. */
#include "core/session.h"

const zci_backend_iface *zci_cuda_backend(void) { return NULL; }

zci_status zci_cuda_device_count(int *count)
{
    if (!count) return zci_error(ZCI_INVALID_ARGUMENT, "zci_cuda_device_count: count is NULL");
    *count = 0;
    return ZCI_OK;
}
