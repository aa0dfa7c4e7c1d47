#include "tinycl_runtime.h"

/*
 * Inverse of pack_bits: ceil(count * bits / 8) bytes -> count codes of `bits` bits (1..8).
 * Python reference: tinycl.export.reference.unpack_bits (tinycl.quant.packing.unpack_bits
 * on one row). Reads exactly ceil(count * bits / 8) bytes.
 */
void unpack_bits(const uint8_t *packed, int32_t count, int32_t bits, uint8_t *codes)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t pending = 0; /* stream bits read but not yet returned, right-aligned */
    int32_t pending_bits = 0, read = 0, i;
    for (i = 0; i < count; ++i) {
        while (pending_bits < bits) {
            pending = (pending << 8) | packed[read++];
            pending_bits += 8;
        }
        pending_bits -= bits;
        codes[i] = (uint8_t)((pending >> pending_bits) & mask);
        pending &= (1u << pending_bits) - 1u;
    }
}
