/* registry.c: the table of operators (one row per op, generated from ops_list.h). */
#include <string.h>

#include "ops/op.h"
#include "ops/ops_list.h"

#define ZCI_DECLARE_OP_(T) extern const zci_op zci_op_##T;
ZCI_OPS(ZCI_DECLARE_OP_)
#undef ZCI_DECLARE_OP_

static const zci_op *const ops[] = {
#define ZCI_OP_ROW_(T) &zci_op_##T,
    ZCI_OPS(ZCI_OP_ROW_)
#undef ZCI_OP_ROW_
};

static int same_domain(const char *a, const char *b)
{
    /* "" and "ai.onnx" both name the default domain */
    if (!a || !strcmp(a, "ai.onnx")) a = "";
    if (!b || !strcmp(b, "ai.onnx")) b = "";
    return !strcmp(a, b);
}

const zci_op *zci_op_find(const char *domain, const char *type, int opset)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(ops[i]->type, type) && same_domain(ops[i]->domain, domain) &&
            opset >= ops[i]->since)
            return ops[i];
    return NULL;
}

int zci_op_known(const char *domain, const char *type)
{
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(ops[i]->type, type) && same_domain(ops[i]->domain, domain)) return 1;
    return 0;
}
