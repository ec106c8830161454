/* test_leak.c: creates a session, runs it and destroys it, N times; run under valgrind (or
 * ASan's leak checker) to show that a session frees everything it allocated.
 * usage: test_leak MODEL [N] */
#include <stdio.h>
#include <stdlib.h>

#include "test_util.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL [N]\n", argv[0]);
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 10;
    for (int i = 0; i < n; i++) {
        zci_session *s;
        zci_options o;
        zci_options_init(&o);
        o.num_threads = 1 + i % 2;
        if (zci_session_create(argv[1], &o, &s)) {
            printf("create failed: %s\n", zci_last_error());
            return 1;
        }
        int n_in = zci_session_input_count(s), n_out = zci_session_output_count(s);
        zci_binding *in = calloc((size_t)n_in, sizeof *in), *out = calloc((size_t)n_out, sizeof *out);
        for (int k = 0; k < n_in; k++) {
            zci_tensor_info t;
            zci_session_input_info(s, k, &t);
            in[k] = (zci_binding){NULL, calloc(1, t.bytes), t.bytes};
        }
        for (int k = 0; k < n_out; k++) {
            zci_tensor_info t;
            zci_session_output_info(s, k, &t);
            out[k] = (zci_binding){NULL, malloc(t.bytes), t.bytes};
        }
        CHECK_OK(zci_run(s, in, n_in, out, n_out));
        for (int k = 0; k < n_in; k++) free(in[k].data);
        for (int k = 0; k < n_out; k++) free(out[k].data);
        free(in);
        free(out);
        zci_session_destroy(s);
    }
    return test_summary("test_leak");
}
