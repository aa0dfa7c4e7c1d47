#include "tinycl_runtime.h"

/*
 * Camera frame -> INT8 input codes of the first layer, by table lookup.
 * Python reference: tinycl.export.reference.rgb_u8_to_input_s8, i.e.
 * IntFrozenStage.quantize_input(tinycl.data.base.to_tensor_batch(frame)).
 *
 * Normalization ((v / 255 - mean[c]) / std[c]) followed by quantization
 * (clamp(round(x / input_scale), -127, 127)) depends only on the channel c and the byte v,
 * so the generator evaluates that very Python computation on all 256 bytes of each channel
 * (tinycl.export.reference.input_table_s8) and the device looks the code up: bit-exact by
 * construction, and no float operation on the device.
 *
 * rgb_hwc: uint8 [height][width][channels] (interleaved, as cameras deliver it);
 * table: int8 [channels][256]; input_chw: int8 [channels][height][width].
 */
void rgb_u8_to_input_s8(const uint8_t *rgb_hwc, int32_t height, int32_t width, int32_t channels,
                        const int8_t *table, int8_t *input_chw)
{
    const int32_t pixels = height * width;
    int32_t p, c;
    for (p = 0; p < pixels; ++p) {
        for (c = 0; c < channels; ++c) {
            input_chw[c * pixels + p] = table[c * 256 + rgb_hwc[p * channels + c]];
        }
    }
}
