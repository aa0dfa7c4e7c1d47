/*
 * tinycl C99 runtime: the device half of tinycl's Python simulation.
 *
 * Every kernel here has a Python reference of the same name in tinycl/export/reference.py
 * (which mostly calls the functions tinycl's learner runs); tests/export checks each one
 * against it on random shapes. Integer kernels are bit-exact with their reference; FP32
 * kernels match it within float rounding, and give the same bits on every target because
 * the runtime is compiled -std=c99 -ffp-contract=off (no fused multiply-adds).
 *
 * Layout: CHW, one image at a time (NCHW with N = 1), everywhere after the camera frame.
 * Why: the replay memory stores a latent as its CHW-flattened codes (tinycl.replay.codecs
 * PackedCodec), so the LR layer must come out in CHW for the packed bytes to match; weights
 * keep PyTorch's OIHW layout, so generated constants are plain flattened tensors. The camera
 * frame alone is HWC (interleaved RGB), and rgb_u8_to_input_s8 transposes as it looks up.
 *   activation [C][H][W]        index (c * H + y) * W + x
 *   conv weight [C_out][C_in][kh][kw], depthwise [C][kh][kw], pointwise [C_out][C_in]
 *   linear weight [out][in]
 *
 * Plain portable C99: fixed-width integer types, no dynamic allocation, no library call;
 * callers own every buffer (the generated tinycl_model.c sizes them statically). Integer
 * accumulators are int32: tinycl.quant.int_frozen refuses layers whose accumulator bound
 * exceeds int32, so no partial sum can overflow. Unless a kernel says otherwise, input and
 * output buffers must not overlap.
 */
#ifndef TINYCL_RUNTIME_H
#define TINYCL_RUNTIME_H

#include <stdint.h>

/* Geometry of a convolution or pooling window (square stride and zero padding, as the
 * frozen stage supports). out_height = (in_height + 2 * padding - kernel_h) / stride + 1. */
typedef struct {
    int32_t in_channels, in_height, in_width;
    int32_t out_channels, out_height, out_width;
    int32_t kernel_h, kernel_w, stride, padding;
} tinycl_conv_shape;

/* ---- INT8 frozen stage ------------------------------------------------------------- */

void rgb_u8_to_input_s8(const uint8_t *rgb_hwc, int32_t height, int32_t width, int32_t channels,
                        const int8_t *table, int8_t *input_chw);
void requantize_u8(const int32_t *acc, int32_t channels, int32_t spatial, const int32_t *multiplier,
                   const int32_t *right_shift, uint8_t *output);
void conv2d_s8(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
               uint8_t *output);
void conv2d_u8(const uint8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
               uint8_t *output);
void depthwise_conv2d_u8(const uint8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                         const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
                         uint8_t *output);
void pointwise_conv2d_u8(const uint8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                         const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
                         uint8_t *output);

/* ---- quantized latent replays ------------------------------------------------------ */

void latent_shift_u8(const uint8_t *latent, int32_t count, int32_t bits, uint8_t *codes);
void latent_clip_u8(const uint8_t *latent, int32_t groups, int32_t group_size, const int32_t *multiplier,
                    const int32_t *right_shift, int32_t bits, uint8_t *codes);
void latent_decode_fp32(const uint8_t *codes, int32_t groups, int32_t group_size, const float *step,
                        float *latent);
int32_t pack_bits(const uint8_t *codes, int32_t count, int32_t bits, uint8_t *packed);
void unpack_bits(const uint8_t *packed, int32_t count, int32_t bits, uint8_t *codes);

/* ---- FP32 adaptive stage, forward ---------------------------------------------------- */

void conv2d_fp32_fw(const float *input, const tinycl_conv_shape *shape, const float *weight,
                    const float *bias, float *output);
void depthwise_fp32_fw(const float *input, const tinycl_conv_shape *shape, const float *weight,
                       const float *bias, float *output);
void pointwise_fp32_fw(const float *input, const tinycl_conv_shape *shape, const float *weight,
                       const float *bias, float *output);
void batch_norm_fp32_fw(const float *input, int32_t channels, int32_t spatial, const float *scale,
                        const float *shift, float *output);
void relu_fp32_fw(const float *input, int32_t count, float *output);
void relu6_fp32_fw(const float *input, int32_t count, float *output);
void avgpool_fp32_fw(const float *input, const tinycl_conv_shape *shape, float *output);
void linear_fp32_fw(const float *input, int32_t in_features, const float *weight, const float *bias,
                    int32_t out_features, float *output);
int32_t argmax_fp32(const float *values, int32_t count);

#endif /* TINYCL_RUNTIME_H */
