/*
 * The verification harness of an exported model: the same program on the host and, through
 * semihosting, under QEMU.
 *
 * Reads TINYCL_INPUT_PATH: "TCI1", then uint32 count, height, width, channels, then count
 * camera frames (uint8 HWC). For each frame it runs the INT8 frozen stage, the Q-bit latent
 * quantizer, bit packing and the FP32 adaptive stage, and writes to TINYCL_OUTPUT_PATH one
 * record: LR layer uint8 [D], codes uint8 [D], packed bytes [ceil(D * Q / 8)], logits float32
 * [K], prediction int32. Then, for each row of the exported replay memory: codes unpacked
 * [D], logits [K], prediction int32, stored label int32. The file starts with "TCO1" and
 * uint32 images, replay rows, D, packed row bytes, K. Numbers are little endian (all three
 * targets are). tinycl.export.toolchains reads it back and compares it with Python.
 * Exit status: 0 done, 2 bad or missing input file, 3 CPU fault (startup code).
 *
 * Region marks (TINYCL_REGION_MARK, tinycl_model.h) split each frame into the steps that
 * tinycl.export.generate lists as its regions, in this order: the frozen stage (its own marks
 * between layers), the latent quantizer, packing, the adaptive stage (marks between ops), then
 * this harness's argmax, writes and the next read; and each replay row into unpacking, the
 * adaptive stage and the writes. Change one and the other together.
 */
#include <stdint.h>

#include "tinycl_model.h"
#include "tinycl_platform.h"
#include "tinycl_runtime.h"

#ifndef TINYCL_INPUT_PATH
#define TINYCL_INPUT_PATH "tinycl_in.bin"
#endif
#ifndef TINYCL_OUTPUT_PATH
#define TINYCL_OUTPUT_PATH "tinycl_out.bin"
#endif

static uint8_t frame[TINYCL_INPUT_BYTES];
static uint8_t lr_u8[TINYCL_LR_VALUES];
static uint8_t lr_codes[TINYCL_LR_VALUES];
static uint8_t lr_packed[TINYCL_LR_ROW_BYTES];
static float logits[TINYCL_NUM_CLASSES];

static void print_number(const char *before, uint32_t value, const char *after)
{
    char digits[11];
    int32_t at = 10;
    digits[at] = '\0';
    do {
        digits[--at] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    platform_print(before);
    platform_print(digits + at);
    platform_print(after);
}

static uint32_t read_u32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
}

static void put_u32(uint8_t *bytes, uint32_t value)
{
    bytes[0] = (uint8_t)value;
    bytes[1] = (uint8_t)(value >> 8);
    bytes[2] = (uint8_t)(value >> 16);
    bytes[3] = (uint8_t)(value >> 24);
}

static int32_t write_all(int32_t handle, const void *data, int32_t bytes)
{
    return platform_write(handle, data, bytes) == bytes;
}

static int32_t write_prediction(int32_t handle, int32_t label)
{
    uint8_t bytes[4];
    put_u32(bytes, (uint32_t)label);
    return write_all(handle, logits, (int32_t)sizeof(logits)) && write_all(handle, bytes, 4);
}

int main(void)
{
    uint8_t header[24];
    uint32_t count, i;
    int32_t input, output, ok = 1;

    input = platform_open(TINYCL_INPUT_PATH, 0);
    if (input < 0) {
        platform_print("tinycl: cannot open " TINYCL_INPUT_PATH "\n");
        return 2;
    }
    if (platform_read(input, header, 20) != 20 || header[0] != 'T' || header[1] != 'C' || header[2] != 'I'
        || header[3] != '1') {
        platform_print("tinycl: " TINYCL_INPUT_PATH " is not a tinycl input file\n");
        return 2;
    }
    count = read_u32(header + 4);
    if (read_u32(header + 8) != TINYCL_INPUT_HEIGHT || read_u32(header + 12) != TINYCL_INPUT_WIDTH
        || read_u32(header + 16) != TINYCL_INPUT_CHANNELS) {
        platform_print("tinycl: frames in " TINYCL_INPUT_PATH " do not have the model's input size\n");
        return 2;
    }
    output = platform_open(TINYCL_OUTPUT_PATH, 1);
    if (output < 0) {
        platform_print("tinycl: cannot create " TINYCL_OUTPUT_PATH "\n");
        return 2;
    }
    header[0] = 'T';
    header[1] = 'C';
    header[2] = 'O';
    header[3] = '1';
    put_u32(header + 4, count);
    put_u32(header + 8, TINYCL_REPLAY_ROWS);
    put_u32(header + 12, TINYCL_LR_VALUES);
    put_u32(header + 16, TINYCL_LR_ROW_BYTES);
    put_u32(header + 20, TINYCL_NUM_CLASSES);
    ok = write_all(output, header, 24);

    for (i = 0; ok && i < count; ++i) {
        if (platform_read(input, frame, TINYCL_INPUT_BYTES) != TINYCL_INPUT_BYTES) {
            platform_print("tinycl: " TINYCL_INPUT_PATH " ends before its last frame\n");
            return 2;
        }
        TINYCL_REGION_MARK();
        tinycl_frozen_forward(frame, lr_u8);
        TINYCL_REGION_MARK();
        tinycl_latent_encode(lr_u8, lr_codes);
        TINYCL_REGION_MARK();
        pack_bits(lr_codes, TINYCL_LR_VALUES, TINYCL_LR_BITS, lr_packed);
        TINYCL_REGION_MARK();
        tinycl_adaptive_forward(lr_codes, logits);
        TINYCL_REGION_MARK();
        ok = write_all(output, lr_u8, TINYCL_LR_VALUES) && write_all(output, lr_codes, TINYCL_LR_VALUES)
             && write_all(output, lr_packed, TINYCL_LR_ROW_BYTES)
             && write_prediction(output, argmax_fp32(logits, TINYCL_NUM_CLASSES));
    }
#if TINYCL_REPLAY_ROWS > 0
    for (i = 0; ok && i < TINYCL_REPLAY_ROWS; ++i) {
        uint8_t label[4];
        TINYCL_REGION_MARK();
        unpack_bits(tinycl_replay_rows + i * TINYCL_LR_ROW_BYTES, TINYCL_LR_VALUES, TINYCL_LR_BITS, lr_codes);
        TINYCL_REGION_MARK();
        tinycl_adaptive_forward(lr_codes, logits);
        TINYCL_REGION_MARK();
        put_u32(label, (uint32_t)tinycl_replay_labels[i]);
        ok = write_all(output, lr_codes, TINYCL_LR_VALUES)
             && write_prediction(output, argmax_fp32(logits, TINYCL_NUM_CLASSES)) && write_all(output, label, 4);
    }
#endif
    platform_close(input);
    platform_close(output);
    if (!ok) {
        platform_print("tinycl: cannot write " TINYCL_OUTPUT_PATH "\n");
        return 2;
    }
    print_number("tinycl: ", count, " frames");
    print_number(", ", (uint32_t)TINYCL_REPLAY_ROWS, " replay rows -> " TINYCL_OUTPUT_PATH "\n");
    return 0;
}
