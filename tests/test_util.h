/* test_util.h: a minimal check harness for the C tests. Each CHECK counts; the program ends
 * with the plain "N passed, M failed" line and exits non-zero if anything failed. */
#ifndef ZCI_TEST_UTIL_H
#define ZCI_TEST_UTIL_H

#include <stdio.h>
#include <string.h>

#include "zcinfer.h"

static int test_passed, test_failed;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* A call must fail with `code` and a last-error message containing `needle`. */
#define CHECK_FAILS(call, code, needle)                                                            \
    do {                                                                                           \
        zci_status st_ = (call);                                                                   \
        CHECK(st_ == (code), "%s returned %s, expected %s (%s)", #call, zci_status_name(st_),      \
              zci_status_name(code), zci_last_error());                                            \
        CHECK(strstr(zci_last_error(), (needle)) != NULL, "message of %s lacks '%s': %s", #call,  \
              (needle), zci_last_error());                                                         \
    } while (0)

#define CHECK_OK(call) CHECK((call) == ZCI_OK, "%s failed: %s", #call, zci_last_error())

static int test_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

#endif
