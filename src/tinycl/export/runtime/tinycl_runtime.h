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

/* Integer blocks of residual networks (MobileNetV2, PhiNet in MCU mode; tinycl.quant.int_blocks):
 * each conv clamps its requantized output to [lo, hi] (ReLU 0..255, ReLU6 0..relu6_code_max,
 * linear -127..127) and writes one byte per code, INT8 codes in two's complement; the residual
 * add rescales both operands as TFLite's quantized ADD. */
void conv2d_s8_range(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                     const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift, int32_t lo,
                     int32_t hi, uint8_t *output);
void depthwise_conv2d_u8_range(const uint8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
                               int32_t lo, int32_t hi, uint8_t *output);
void depthwise_conv2d_s8_range(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
                               int32_t lo, int32_t hi, uint8_t *output);
void pointwise_conv2d_u8_range(const uint8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
                               int32_t lo, int32_t hi, uint8_t *output);
void pointwise_conv2d_s8_range(const int8_t *input, const tinycl_conv_shape *shape, const int8_t *weight,
                               const int32_t *bias, const int32_t *multiplier, const int32_t *right_shift,
                               int32_t lo, int32_t hi, uint8_t *output);
void residual_add_s8(const uint8_t *a, int32_t a_signed, const int8_t *b, int32_t count, const int32_t *multiplier,
                     const int32_t *right_shift, int8_t *output);

/* ---- quantized latent replays ------------------------------------------------------ */

void latent_shift_u8(const uint8_t *latent, int32_t count, int32_t bits, uint8_t *codes);
void latent_clip_u8(const uint8_t *latent, int32_t groups, int32_t group_size, const int32_t *multiplier,
                    const int32_t *right_shift, int32_t bits, uint8_t *codes);
void latent_shift_s8(const int8_t *latent, int32_t count, int32_t bits, uint8_t *codes);
void latent_decode_fp32(const uint8_t *codes, int32_t groups, int32_t group_size, const float *step,
                        int32_t offset, float *latent);
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

/* ---- FP32 training: PULP-TrainLib's triple per layer (forward above, weight gradient _wg,
 * input gradient _ig), batch renormalization in training mode, masks, loss, SGD ------------
 *
 * Python references of the same names: tinycl/export/reference_train.py (PyTorch autograd and
 * the learner's own modules); tests/export/test_export_train_kernels.py holds each kernel to
 * its reference. Weight-gradient kernels work on one sample and ACCUMULATE into grad_weight
 * (the caller zeroes it once per step, then calls them for every sample of the mini-batch);
 * input-gradient kernels OVERWRITE grad_input.
 *
 * Channel-sparse weight gradients (Paissan et al., CVPRW 2024; tinycl.train.sparse, dim "in"):
 * `kept` holds only the chosen input channels of the layer's input, [count][H][W] in the order
 * of channels[] (ascending), as keep_channels_fp32 copied them during the forward pass; only
 * the weight columns of those channels are touched (depthwise: rows, channel c -> c).
 * channels == 0 means every channel (dense), count = the layer's channels, kept = the input. */

void keep_channels_fp32(const float *input, int32_t spatial, const int32_t *channels, int32_t count,
                        float *kept);
void conv2d_fp32_wg(const float *kept, const tinycl_conv_shape *shape, const float *grad_output,
                    const int32_t *channels, int32_t count, float *grad_weight);
void conv2d_fp32_ig(const float *grad_output, const tinycl_conv_shape *shape, const float *weight,
                    float *grad_input);
void depthwise_fp32_wg(const float *kept, const tinycl_conv_shape *shape, const float *grad_output,
                       const int32_t *channels, int32_t count, float *grad_weight);
void depthwise_fp32_ig(const float *grad_output, const tinycl_conv_shape *shape, const float *weight,
                       float *grad_input);
void pointwise_fp32_wg(const float *kept, const tinycl_conv_shape *shape, const float *grad_output,
                       const int32_t *channels, int32_t count, float *grad_weight);
void pointwise_fp32_ig(const float *grad_output, const tinycl_conv_shape *shape, const float *weight,
                       float *grad_input);
void linear_fp32_wg(const float *kept, int32_t in_features, const float *grad_output, int32_t out_features,
                    const int32_t *channels, int32_t count, float *grad_weight);
void linear_fp32_ig(const float *grad_output, int32_t out_features, const float *weight, int32_t in_features,
                    float *grad_input);
void bias_fp32_wg(const float *grad_output, int32_t channels, int32_t spatial, float *grad_bias);
void avgpool_fp32_bw(const float *grad_output, const tinycl_conv_shape *shape, float *grad_input);

/* ReLU / ReLU6 in training: the output and a 1-bit mask (bit i of byte i / 8, LSB first) of
 * where the derivative is 1 (x > 0; ReLU6: 0 < x < 6), as tinycl.train.sparse.MaskedReLU keeps;
 * relu_fp32_bw serves both. mask: ceil(count / 8) bytes. */
void relu_fp32_fw_train(const float *input, int32_t count, float *output, uint8_t *mask);
void relu6_fp32_fw_train(const float *input, int32_t count, float *output, uint8_t *mask);
void relu_fp32_bw(const float *grad_output, const uint8_t *mask, int32_t count, float *grad_input);

/* Batch renormalization (tinycl.train.batch_renorm.BatchRenorm2d) over a mini-batch
 * [batch][channels][spatial]. stats_std 0: "var" statistics (running variance, tinycl),
 * 1: "std" (a running standard deviation, ar1-pytorch). Hyper-parameters are doubles, as the
 * module keeps them (r_max / d_max ramp in float64); each is rounded to float where the
 * module's float32 tensor ops round it. batch_* and r, d: the last training forward's
 * per-channel statistics, which the backward kernels read (r, d are constants there). */
typedef struct {
    int32_t channels;
    int32_t stats_std;
    float eps;
    double momentum, r_max, d_max, max_r_max, max_d_max, ramp_per_sample;
    float *gamma, *beta;               /* weight, bias */
    float *running_mean, *running_var; /* running_var holds the running std when stats_std */
    float *batch_mean, *batch_std, *r, *d;
} tinycl_brn;

void batch_renorm_fp32_fw_train(const float *input, int32_t batch, int32_t spatial, tinycl_brn *bn,
                                float *output);
void batch_renorm_fp32_wg(const float *grad_output, const float *input, int32_t batch, int32_t spatial,
                          const tinycl_brn *bn, float *grad_gamma, float *grad_beta);
void batch_renorm_fp32_ig(const float *grad_output, const float *input, int32_t batch, int32_t spatial,
                          const tinycl_brn *bn, float *grad_input);
void batch_renorm_fp32_fw_eval(const float *input, int32_t spatial, const tinycl_brn *bn, float *output);
void batch_renorm_set_phase(tinycl_brn *bn, double momentum);

/* Mean softmax cross-entropy over the mini-batch (nn.CrossEntropyLoss) and its gradient
 * with respect to the logits [batch][classes]; returns the loss. */
float cross_entropy_fp32(const float *logits, const uint8_t *labels, int32_t batch, int32_t classes,
                         float *grad_logits);
float tinycl_expf(float x);
float tinycl_logf(float x);

/* SGD with momentum and weight decay, torch.optim.SGD's _single_tensor_sgd per element:
 * d = g + wd * p; buf = buf * momentum + d (a zero buffer is torch's first step); p = p - lr * d'
 * with d' = buf (momentum != 0) or d. sgd_fp32_channels: the same on the chosen channels of a
 * weight seen as [outer][channels][inner] (tinycl.train.optim.ChannelSGD: the other rows of the
 * weight and of its buffer stay untouched). */
void sgd_fp32(float *param, const float *grad, float *momentum_buffer, int32_t count, float lr, float momentum,
              float weight_decay);
void sgd_fp32_channels(float *param, const float *grad, float *momentum_buffer, int32_t outer, int32_t channels,
                       int32_t inner, const int32_t *chosen, int32_t count, float lr, float momentum,
                       float weight_decay);

/* ---- the continual-learning loop's integer parts ----------------------------------------- */

/* PCG32 (tinycl.prng.Pcg32): pcg-c-basic's generator, seeding, bounded draws; Fisher-Yates
 * from the top; choice = the first k steps of that shuffle, in the order drawn. */
typedef struct {
    uint64_t state, inc;
} tinycl_pcg32;

void pcg32_seed(tinycl_pcg32 *rng, uint64_t seed, uint64_t stream);
uint32_t pcg32_next(tinycl_pcg32 *rng);
uint32_t pcg32_bounded(tinycl_pcg32 *rng, uint32_t bound);
double pcg32_random(tinycl_pcg32 *rng);
void pcg32_shuffle(tinycl_pcg32 *rng, int32_t *values, int32_t count);
void pcg32_permutation(tinycl_pcg32 *rng, int32_t count, int32_t *values);
void pcg32_choice(tinycl_pcg32 *rng, int32_t count, int32_t k, int32_t *scratch, int32_t *picked);
void sort_int32(int32_t *values, int32_t count);

/* The learner's mini-batch plan (tinycl.train.learner.minibatch_plan, padded_rows). */
typedef struct {
    int32_t new_per_batch, replays_per_batch, iterations;
} tinycl_plan;

tinycl_plan minibatch_plan(int32_t new_items, int32_t replay_items, int32_t minibatch);
int32_t padded_rows(int32_t count, int32_t minibatch, int32_t *rows);

/* The replay memory (tinycl.replay.memory.LatentReplayMemory): packed rows, one-byte labels,
 * and its update policies. replay_update writes the offered rows (offered[k] indexes
 * new_rows / new_labels) into slots as the policy decides, drawing from rng in the learner's
 * order, and lists each write (slot, offered index k) in slots / items; returns the writes.
 * scratch: max(offered, capacity) int32. */
enum { TINYCL_POLICY_RECIPE, TINYCL_POLICY_AR1, TINYCL_POLICY_RESERVOIR, TINYCL_POLICY_CLASS_BALANCED };

typedef struct {
    int32_t capacity, size, row_bytes, num_classes, policy;
    uint32_t seen;
    uint8_t *rows;
    uint8_t *labels;
    int32_t *seen_per_class; /* [num_classes] */
    int32_t *class_counts;   /* [num_classes] scratch */
} tinycl_replay_memory;

int32_t replay_update(tinycl_replay_memory *memory, const uint8_t *new_rows, const uint8_t *new_labels,
                      const int32_t *offered, int32_t count, int32_t batch_index, tinycl_pcg32 *rng,
                      int32_t *scratch, int32_t *slots, int32_t *items);

/* CWR* (tinycl.train.cwr.CWRStar) on the head weight [classes][features]: current[] lists the
 * current classes (ascending), counts[] the examples per class this batch (replays included). */
void cwr_before_batch_fp32(float *weight, const float *consolidated, const uint8_t *has_consolidated,
                           int32_t classes, int32_t features, const int32_t *current, int32_t count);
void cwr_after_batch_fp32(float *weight, float *consolidated, uint8_t *has_consolidated, float *past_counts,
                          int32_t classes, int32_t features, const int32_t *current, int32_t count,
                          const int32_t *class_counts);

#endif /* TINYCL_RUNTIME_H */
