/*
 * The continual-learning loop on the device: tinycl.train.learner.Learner's train_experience,
 * draw for draw, with the generated training step (tinycl_train.c) and settings (tinycl_train.h).
 *
 * Input, one experience at a time (never the whole stream in RAM): stream/exp_NNNNN.bin =
 * "TCE1", uint32 count, height, width, channels, count labels (uint8), count camera frames
 * (uint8 HWC); after the last experience stream/test.bin ("TCI1", as the inference harness
 * reads) for test predictions. Each new frame passes the INT8 frozen stage once, is quantized
 * to Q bits and packed; training unpacks the codes of every sample it uses.
 *
 * Per experience i (Learner.train_experience / fit, tinycl.prng's LOOP_STREAM for every draw):
 * SGD re-created at batch 1 (reset_sgd), batch renorm's incremental phase from batch 1, lr for
 * batch 0 and inc_lr after; CWR* before; rows (batch 0 padded for ar1); the plan
 * (minibatch_plan: cur new + replays, iterations); a permutation of the rows once (shuffle
 * "batch") or per epoch, then per epoch a permutation of the memory (replays "shuffled") or
 * slots in memory order; per step cur new latents then the replays; CWR* after; the memory
 * update with its policy.
 *
 * Output TINYCL_TRAIN_OUTPUT_PATH: "TCT1", 8 uint32 (experiences, classes, LR values, packed
 * row bytes, mini-batch, parameter bytes, channel bytes, random layers), then records (tag,
 * uint32 length, payload): CODE (an experience's labels and packed codes), PERM (a permutation
 * drawn), STEP (experience, epoch, iteration, batch, new, replays, loss, rows then slots,
 * labels), CHAN (the step's random channels), MEMW (the memory update's slots), MEMS (the
 * memory after it), PARM (every parameter), PRED (test logits and predictions), STAK (the
 * stack's high-water mark), DONE. tinycl.export.train_verify reads it.
 *
 * Region marks: per frame as the inference harness (frozen layers, latent encode, pack, end),
 * one at the start of training an experience, per step one before assembling the batch, the
 * step's own (tinycl_train.c), one after it; one before the memory update; per test frame the
 * frozen layers, encode, predict, end. tinycl.export.train_measure reconstructs the sequence.
 * Exit status: 0 done, 2 bad input or output file, 3 CPU fault (startup code).
 */
#include <stdint.h>

#include "tinycl_model.h"
#include "tinycl_platform.h"
#include "tinycl_runtime.h"
#include "tinycl_train.h"

#ifndef TINYCL_TRAIN_OUTPUT_PATH
#define TINYCL_TRAIN_OUTPUT_PATH "tinycl_train_out.bin"
#endif
#define TEST_PATH "stream/test.bin"
#define SLOTS (TINYCL_TRAIN_CAPACITY > 0 ? TINYCL_TRAIN_CAPACITY : 1)
#define SCRATCH (TINYCL_TRAIN_MAX_ROWS > SLOTS ? TINYCL_TRAIN_MAX_ROWS : SLOTS)

void tinycl_stack_paint(void);
uint32_t tinycl_stack_high_water(void);

static uint8_t frame[TINYCL_INPUT_BYTES];
static uint8_t lr_u8[TINYCL_LR_VALUES];
static uint8_t lr_codes[TINYCL_LR_VALUES];
static uint8_t new_rows[TINYCL_TRAIN_MAX_NEW * TINYCL_LR_ROW_BYTES] TINYCL_EXT_RAM; /* this experience, packed */
static uint8_t new_labels[TINYCL_TRAIN_MAX_NEW];
static uint8_t memory_rows[SLOTS * TINYCL_LR_ROW_BYTES] TINYCL_EXT_RAM; /* the replay memory, packed */
static uint8_t memory_labels[SLOTS];
static int32_t seen_per_class[TINYCL_TRAIN_CLASSES];
static int32_t class_counts[TINYCL_TRAIN_CLASSES];
static int32_t rows[TINYCL_TRAIN_MAX_ROWS];
static int32_t order[TINYCL_TRAIN_MAX_ROWS];
static int32_t mem_order[SLOTS];
static int32_t scratch[SCRATCH];
static int32_t write_slots[TINYCL_TRAIN_MAX_ROWS];
static int32_t write_items[TINYCL_TRAIN_MAX_ROWS];
static uint8_t batch_codes[TINYCL_TRAIN_MINIBATCH * TINYCL_LR_VALUES] TINYCL_EXT_RAM; /* a step's codes */
static uint8_t batch_labels[TINYCL_TRAIN_MINIBATCH];
static int32_t step_rows[TINYCL_TRAIN_MINIBATCH];
static int32_t current[TINYCL_TRAIN_CLASSES];
static int32_t counts[TINYCL_TRAIN_CLASSES];
static float test_logits[TINYCL_TRAIN_CLASSES];
#if TINYCL_TRAIN_CWR
static float cwr_consolidated[TINYCL_TRAIN_CLASSES * TINYCL_TRAIN_FEATURES];
static uint8_t cwr_has[TINYCL_TRAIN_CLASSES];
static float cwr_past[TINYCL_TRAIN_CLASSES];
#endif

static int32_t output;
static int32_t ok = 1;

static void put(const void *data, int32_t bytes)
{
    ok = ok && platform_write(output, data, bytes) == bytes; /* little endian on every target */
}

static void put_i32(int32_t value)
{
    put(&value, 4);
}

static void record(const char *tag, int32_t bytes)
{
    put(tag, 4);
    put_i32(bytes);
}

static uint32_t read_u32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
}

/* Opens a frame file and checks its header: the frame count, or -1 (message printed). */
static int32_t open_frames(const char *path, const char *magic, int32_t *handle)
{
    uint8_t header[20];
    int32_t count;
    *handle = platform_open(path, 0);
    if (*handle < 0) {
        platform_print("tinycl: cannot open ");
        platform_print(path);
        platform_print("\n");
        return -1;
    }
    if (platform_read(*handle, header, 20) != 20 || header[0] != magic[0] || header[1] != magic[1]
        || header[2] != magic[2] || header[3] != magic[3] || read_u32(header + 8) != TINYCL_INPUT_HEIGHT
        || read_u32(header + 12) != TINYCL_INPUT_WIDTH || read_u32(header + 16) != TINYCL_INPUT_CHANNELS) {
        platform_print("tinycl: ");
        platform_print(path);
        platform_print(" is not a frame file of the model's input size\n");
        return -1;
    }
    count = (int32_t)read_u32(header + 4);
    return count;
}

static void shuffle_rows(tinycl_pcg32 *rng, int32_t count)
{
    int32_t i;
    pcg32_permutation(rng, count, order);
    record("PERM", 4 + 4 * count);
    put_i32(count);
    put(order, 4 * count);
    for (i = 0; i < count; ++i) {
        order[i] = rows[order[i]];
    }
}

static void train_experience(int32_t index, int32_t n, tinycl_pcg32 *loop_rng, tinycl_pcg32 *sparse_rng,
                             tinycl_replay_memory *memory)
{
    const float lr = (float)(index == 0 ? TINYCL_TRAIN_LR : TINYCL_TRAIN_INC_LR);
    int32_t count, replay_items, m, epoch, it, i, offered, writes, current_count = 0;
    tinycl_plan plan;
    if (index == 1 && TINYCL_TRAIN_RESET_SGD) {
        tinycl_train_reset_momentum(); /* ar1-pytorch re-creates SGD at batch 1 */
    }
    if (index >= 1 && TINYCL_TRAIN_BRN_PHASE) {
        tinycl_train_set_phase(TINYCL_TRAIN_BRN_INC_MOMENTUM);
    }
    /* CWR*'s current classes: the new labels and every replay label, with their counts */
    for (i = 0; i < TINYCL_TRAIN_CLASSES; ++i) {
        counts[i] = 0;
    }
    for (i = 0; i < n; ++i) {
        counts[new_labels[i]] += 1;
    }
    for (i = 0; i < memory->size; ++i) {
        counts[memory_labels[i]] += 1;
    }
    for (i = 0; i < TINYCL_TRAIN_CLASSES; ++i) {
        if (counts[i] > 0) {
            current[current_count++] = i;
        }
    }
#if TINYCL_TRAIN_CWR
    cwr_before_batch_fp32(tinycl_train_head(), cwr_consolidated, cwr_has, TINYCL_TRAIN_CLASSES, TINYCL_TRAIN_FEATURES,
                          current, current_count);
#endif
    if (TINYCL_TRAIN_PAD_FIRST_BATCH && index == 0) {
        count = padded_rows(n, TINYCL_TRAIN_MINIBATCH, rows);
    } else {
        for (i = 0; i < n; ++i) {
            rows[i] = i;
        }
        count = n;
    }
    /* ar1-pytorch sizes later mini-batches with the nominal memory size */
    replay_items = TINYCL_TRAIN_REPLAY_MEMORY_ORDER && index > 0 ? memory->capacity : memory->size;
    plan = minibatch_plan(count, replay_items, TINYCL_TRAIN_MINIBATCH);
    m = memory->size;
    if (TINYCL_TRAIN_SHUFFLE_BATCH) {
        shuffle_rows(loop_rng, count);
    }
    for (epoch = 0; epoch < TINYCL_TRAIN_EPOCHS; ++epoch) {
        if (!TINYCL_TRAIN_SHUFFLE_BATCH) {
            shuffle_rows(loop_rng, count);
        }
        if (plan.replays_per_batch && m && !TINYCL_TRAIN_REPLAY_MEMORY_ORDER) {
            pcg32_permutation(loop_rng, m, mem_order);
            record("PERM", 4 + 4 * m);
            put_i32(m);
            put(mem_order, 4 * m);
        }
        for (it = 0; it < plan.iterations; ++it) {
            int32_t batch = 0, replays = 0, first = 0, last = 0, j;
            float loss;
            TINYCL_REGION_MARK(); /* the batch: new latents, then replays, unpacked */
            for (j = 0; j < plan.new_per_batch; ++j) {
                const int32_t row = order[it * plan.new_per_batch + j];
                unpack_bits(new_rows + row * TINYCL_LR_ROW_BYTES, TINYCL_LR_VALUES, TINYCL_LR_BITS,
                            batch_codes + batch * TINYCL_LR_VALUES);
                batch_labels[batch] = new_labels[row];
                step_rows[batch++] = row;
            }
            if (plan.replays_per_batch && m) {
                if (TINYCL_TRAIN_REPLAY_MEMORY_ORDER) {
                    first = it * plan.replays_per_batch < m ? it * plan.replays_per_batch : m;
                    last = (it + 1) * plan.replays_per_batch < m ? (it + 1) * plan.replays_per_batch : m;
                } else {
                    first = 0;
                    last = plan.replays_per_batch;
                }
                for (j = first; j < last; ++j) {
                    const int32_t slot = TINYCL_TRAIN_REPLAY_MEMORY_ORDER ? j : mem_order[(it * plan.replays_per_batch + j) % m];
                    unpack_bits(memory_rows + slot * TINYCL_LR_ROW_BYTES, TINYCL_LR_VALUES, TINYCL_LR_BITS,
                                batch_codes + batch * TINYCL_LR_VALUES);
                    batch_labels[batch] = memory_labels[slot];
                    step_rows[batch++] = slot;
                    ++replays;
                }
            }
            loss = tinycl_train_step(batch_codes, batch_labels, batch, lr, sparse_rng);
            TINYCL_REGION_MARK(); /* the step's record and the loop */
            record("STEP", 28 + 5 * batch);
            put_i32(index);
            put_i32(epoch);
            put_i32(it);
            put_i32(batch);
            put_i32(plan.new_per_batch);
            put_i32(replays);
            put(&loss, 4);
            put(step_rows, 4 * batch);
            put(batch_labels, batch);
            if (TINYCL_TRAIN_RANDOM_LAYERS) {
                record("CHAN", tinycl_train_channels_bytes());
                ok = ok && tinycl_train_write_channels(output);
            }
        }
    }
    /* the items offered to the memory: those trained in an epoch (shuffle "batch") or all n */
    if (TINYCL_TRAIN_SHUFFLE_BATCH) {
        offered = plan.iterations * plan.new_per_batch;
    } else {
        for (i = 0; i < n; ++i) {
            order[i] = i;
        }
        offered = n;
    }
    TINYCL_REGION_MARK(); /* CWR* and the memory update */
#if TINYCL_TRAIN_CWR
    cwr_after_batch_fp32(tinycl_train_head(), cwr_consolidated, cwr_has, cwr_past, TINYCL_TRAIN_CLASSES,
                         TINYCL_TRAIN_FEATURES, current, current_count, counts);
#else
    (void)current_count;
#endif
    writes = replay_update(memory, new_rows, new_labels, order, offered, index, loop_rng, scratch, write_slots,
                           write_items);
    record("MEMW", 12 + 4 * writes);
    put_i32(index);
    put_i32(memory->size);
    put_i32(writes);
    put(write_slots, 4 * writes);
    if (index < TINYCL_TRAIN_TRACE_EXPERIENCES) {
        record("MEMS", 8 + memory->size * (1 + TINYCL_LR_ROW_BYTES));
        put_i32(index);
        put_i32(memory->size);
        put(memory_labels, memory->size);
        put(memory_rows, memory->size * TINYCL_LR_ROW_BYTES);
    }
    if (index < TINYCL_TRAIN_PARAM_EXPERIENCES || index == TINYCL_TRAIN_TRACE_EXPERIENCES - 1
        || index == TINYCL_TRAIN_EXPERIENCES - 1) {
        record("PARM", 4 + tinycl_train_params_bytes());
        put_i32(index);
        ok = ok && tinycl_train_write_params(output);
    }
}

static int32_t learn_experience(int32_t index, tinycl_pcg32 *loop_rng, tinycl_pcg32 *sparse_rng,
                                tinycl_replay_memory *memory)
{
    char path[] = "stream/exp_00000.bin";
    int32_t input, n, k, digit, value = index;
    for (digit = 15; digit >= 11; --digit) {
        path[digit] = (char)('0' + value % 10);
        value /= 10;
    }
    n = open_frames(path, "TCE1", &input);
    if (n < 0) {
        return 0;
    }
    if (n < 1 || n > TINYCL_TRAIN_MAX_NEW || platform_read(input, new_labels, n) != n) {
        platform_print("tinycl: an experience file's frame count or labels do not fit the program\n");
        return 0;
    }
    for (k = 0; k < n; ++k) {
        if (new_labels[k] >= TINYCL_TRAIN_CLASSES
            || platform_read(input, frame, TINYCL_INPUT_BYTES) != TINYCL_INPUT_BYTES) {
            platform_print("tinycl: an experience file ends early or holds a label out of range\n");
            return 0;
        }
        TINYCL_REGION_MARK();
        tinycl_frozen_forward(frame, lr_u8);
        TINYCL_REGION_MARK();
        tinycl_latent_encode(lr_u8, lr_codes);
        TINYCL_REGION_MARK();
        pack_bits(lr_codes, TINYCL_LR_VALUES, TINYCL_LR_BITS, new_rows + k * TINYCL_LR_ROW_BYTES);
        TINYCL_REGION_MARK(); /* the frame's end: the next read */
    }
    platform_close(input);
    if (index < TINYCL_TRAIN_TRACE_EXPERIENCES) {
        record("CODE", 8 + n * (1 + TINYCL_LR_ROW_BYTES));
        put_i32(index);
        put_i32(n);
        put(new_labels, n);
        put(new_rows, n * TINYCL_LR_ROW_BYTES);
    }
    TINYCL_REGION_MARK(); /* training the experience: its setup */
    train_experience(index, n, loop_rng, sparse_rng, memory);
    return 1;
}

static int32_t predict_test_frames(void)
{
    int32_t input, count, k;
    count = open_frames(TEST_PATH, "TCI1", &input);
    if (count < 0 || count > TINYCL_TRAIN_TEST_IMAGES) {
        if (count >= 0) {
            platform_print("tinycl: " TEST_PATH " holds more frames than the program predicts\n");
        }
        return 0;
    }
    record("PRED", 8 + count * (4 * TINYCL_TRAIN_CLASSES + 4));
    put_i32(count);
    put_i32(TINYCL_TRAIN_CLASSES);
    for (k = 0; k < count; ++k) {
        if (platform_read(input, frame, TINYCL_INPUT_BYTES) != TINYCL_INPUT_BYTES) {
            platform_print("tinycl: " TEST_PATH " ends before its last frame\n");
            return 0;
        }
        TINYCL_REGION_MARK();
        tinycl_frozen_forward(frame, lr_u8);
        TINYCL_REGION_MARK();
        tinycl_latent_encode(lr_u8, lr_codes);
        TINYCL_REGION_MARK();
        tinycl_train_predict(lr_codes, test_logits);
        TINYCL_REGION_MARK(); /* the record and the next read */
        put(test_logits, 4 * TINYCL_TRAIN_CLASSES);
        put_i32(argmax_fp32(test_logits, TINYCL_TRAIN_CLASSES));
    }
    platform_close(input);
    return 1;
}

int main(void)
{
    tinycl_pcg32 loop_rng, sparse_rng;
    tinycl_replay_memory memory;
    int32_t header[8], index;
    tinycl_stack_paint();
    output = platform_open(TINYCL_TRAIN_OUTPUT_PATH, 1);
    if (output < 0) {
        platform_print("tinycl: cannot create " TINYCL_TRAIN_OUTPUT_PATH "\n");
        return 2;
    }
    pcg32_seed(&loop_rng, TINYCL_TRAIN_SEED, 1u);   /* tinycl.prng.LOOP_STREAM */
    pcg32_seed(&sparse_rng, TINYCL_TRAIN_SEED, 2u); /* tinycl.prng.SPARSE_STREAM */
    memory.capacity = TINYCL_TRAIN_CAPACITY;
    memory.size = 0;
    memory.row_bytes = TINYCL_LR_ROW_BYTES;
    memory.num_classes = TINYCL_TRAIN_CLASSES;
    memory.policy = TINYCL_TRAIN_POLICY;
    memory.seen = 0u;
    memory.rows = memory_rows;
    memory.labels = memory_labels;
    memory.seen_per_class = seen_per_class;
    memory.class_counts = class_counts;
    header[0] = TINYCL_TRAIN_EXPERIENCES;
    header[1] = TINYCL_TRAIN_CLASSES;
    header[2] = TINYCL_LR_VALUES;
    header[3] = TINYCL_LR_ROW_BYTES;
    header[4] = TINYCL_TRAIN_MINIBATCH;
    header[5] = tinycl_train_params_bytes();
    header[6] = tinycl_train_channels_bytes();
    header[7] = TINYCL_TRAIN_RANDOM_LAYERS;
    put("TCT1", 4);
    put(header, sizeof header);
    for (index = 0; ok && index < TINYCL_TRAIN_EXPERIENCES; ++index) {
        if (!learn_experience(index, &loop_rng, &sparse_rng, &memory)) {
            return 2;
        }
    }
    if (ok && TINYCL_TRAIN_TEST_IMAGES > 0 && !predict_test_frames()) {
        return 2;
    }
    record("STAK", 4);
    put_i32((int32_t)tinycl_stack_high_water());
    record("DONE", 0);
    platform_close(output);
    if (!ok) {
        platform_print("tinycl: cannot write " TINYCL_TRAIN_OUTPUT_PATH "\n");
        return 2;
    }
    platform_print("tinycl: learned the stream -> " TINYCL_TRAIN_OUTPUT_PATH "\n");
    return 0;
}
