#include "tinycl_runtime.h"

/*
 * count codes of `bits` bits (1..8) -> ceil(count * bits / 8) bytes; returns that number.
 * Python reference: tinycl.export.reference.pack_bits (tinycl.quant.packing.pack_bits on
 * one row).
 *
 * Layout (tinycl.quant.packing): one bit stream per latent; value i occupies stream bits
 * [i * bits, (i + 1) * bits), most significant bit first; stream bit b is bit 7 - b % 8 of
 * byte b / 8; unused low bits of the last byte are 0. Codes are masked to `bits` bits (the
 * Python packer refuses larger codes instead).
 */
int32_t pack_bits(const uint8_t *codes, int32_t count, int32_t bits, uint8_t *packed)
{
    const uint32_t mask = (1u << bits) - 1u;
    uint32_t pending = 0; /* the stream bits not yet written, right-aligned: fewer than 8 */
    int32_t pending_bits = 0, written = 0, i;
    for (i = 0; i < count; ++i) {
        pending = (pending << bits) | (codes[i] & mask);
        pending_bits += bits;
        while (pending_bits >= 8) {
            pending_bits -= 8;
            packed[written++] = (uint8_t)(pending >> pending_bits);
        }
        pending &= (1u << pending_bits) - 1u;
    }
    if (pending_bits > 0) {
        packed[written++] = (uint8_t)(pending << (8 - pending_bits));
    }
    return written;
}
