/* sha256.c — streamed SHA-256 with OpenSSL EVP (see sha256.h). */
#include "registry/sha256.h"
#include "util/error.h"
#include "util/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>

#define SHA_BLOCK (1u << 20)

static void to_hex(const unsigned char *d, unsigned n, char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < n && i < 32; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}

lmx_status lmx_sha256_bytes(const void *data, size_t len, char hex[65]) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(data, len, d, &n, EVP_sha256(), NULL) || n != 32)
        return lmx_error(LMX_ERR_IO, "sha256: digest failed");
    to_hex(d, n, hex);
    return LMX_OK;
}

lmx_status lmx_sha256_file(const char *path, char hex[65], uint64_t *size) {
    if (size) *size = 0;
    int fd;
    lmx_status os = lmx_fs_open_regular(path, &fd); /* a FIFO or device would block or never end */
    if (os != LMX_OK) return os;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: fdopen failed", path);
    }
    unsigned char *buf = malloc(SHA_BLOCK); /* [SHA_BLOCK] bytes of the file */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    lmx_status st = LMX_OK;
    if (!buf || !ctx) {
        st = lmx_error(LMX_ERR_OUT_OF_MEMORY, "%s: sha256: allocation failed", path);
        goto out;
    }
    if (!EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        st = lmx_error(LMX_ERR_IO, "%s: sha256 init failed", path);
        goto out;
    }
    uint64_t total = 0;
    size_t got;
    while ((got = fread(buf, 1, SHA_BLOCK, f)) > 0) {
        if (!EVP_DigestUpdate(ctx, buf, got)) {
            st = lmx_error(LMX_ERR_IO, "%s: sha256 update failed", path);
            goto out;
        }
        total += got;
    }
    if (ferror(f)) {
        st = lmx_error(LMX_ERR_IO, "%s: read error after %llu bytes", path, (unsigned long long)total);
        goto out;
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_DigestFinal_ex(ctx, d, &n) || n != 32) {
        st = lmx_error(LMX_ERR_IO, "%s: sha256 final failed", path);
        goto out;
    }
    to_hex(d, n, hex);
    if (size) *size = total;
out:
    EVP_MD_CTX_free(ctx);
    free(buf);
    fclose(f);
    return st;
}
