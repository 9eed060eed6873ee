/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser and validator.
 *
 * Feeds the input to lmx_safetensors_open_memory as a whole file image, then reads every byte of
 * every view, looks every tensor up by name, and converts every float tensor to f32, so ASan sees
 * any view that escapes the image. The image is copied into an exact-size heap buffer first. */
#include "formats/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *img = malloc(size ? size : 1);
    if (!img) return 0;
    if (size) memcpy(img, data, size);
    lmx_safetensors *st = NULL;
    if (lmx_safetensors_open_memory(img, size, "fuzz.safetensors", &st) == LMX_OK) {
        volatile uint8_t sink = 0;
        float buf[64]; /* [chunk] */
        for (size_t i = 0; i < lmx_safetensors_count(st); i++) {
            const lmx_tensor_view *v = lmx_safetensors_get(st, i);
            if (lmx_safetensors_find(st, v->name) != v) abort();
            if (v->data < img || v->nbytes > size || v->data + v->nbytes > img + size) abort();
            for (size_t b = 0; b < v->nbytes; b++) sink ^= v->data[b];
            if (lmx_dtype_is_float(v->dtype)) {
                for (int64_t e = 0; e < v->numel; e += 64) {
                    int64_t n = v->numel - e < 64 ? v->numel - e : 64;
                    if (lmx_tensor_to_f32(v, e, n, buf) != LMX_OK) abort();
                    sink ^= (uint8_t)buf[0];
                }
                if (lmx_tensor_to_f32(v, v->numel, 1, buf) == LMX_OK) abort(); /* out of range */
            }
        }
        for (size_t i = 0; i < lmx_safetensors_metadata_count(st); i++) {
            const char *k = lmx_safetensors_metadata_key(st, i);
            const char *val = lmx_safetensors_metadata(st, k);
            if (!val) abort();
            sink ^= (uint8_t)strlen(val);
        }
        (void)sink;
    }
    lmx_safetensors_close(st);
    free(img);
    return 0;
}
