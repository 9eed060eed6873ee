/* sha256.h — SHA-256 of files through OpenSSL EVP, streamed in 1 MiB blocks (any file size).
 * Thread-safe (no shared state). */
#ifndef LMX_REGISTRY_SHA256_H
#define LMX_REGISTRY_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include "lmx.h"

/* hex: 64 lower-case hex digits + NUL. *size (may be NULL): bytes hashed. Errors name the path:
 * MODEL_NOT_FOUND (missing), IO (unreadable), OUT_OF_MEMORY. */
lmx_status lmx_sha256_file(const char *path, char hex[65], uint64_t *size);
/* Digest of a memory block (for tests and small data). */
lmx_status lmx_sha256_bytes(const void *data, size_t len, char hex[65]);

#endif
