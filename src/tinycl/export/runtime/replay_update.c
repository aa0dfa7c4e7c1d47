#include "tinycl_runtime.h"

/*
 * The replay memory's update after a CL batch, each policy as
 * tinycl.replay.memory.LatentReplayMemory.update draws and writes (Python reference:
 * tinycl.export.reference_train.replay_update, the memory class itself on the same rows):
 *
 *   recipe / ar1 (ar1-pytorch): h = min(N // (i + 1), n); free slots first (recipe always; ar1
 *     only into an empty memory, which stays batch 0's sample), h = min(h, free + size);
 *     choice(n, h) offered items, then choice(size, h - free) occupied slots; seen += n.
 *   reservoir: per item, seen += 1; a free slot, else j = bounded(seen) replaces slot j < N.
 *   class-balanced (Chrysakis & Moens 2020): per item of class c, with the memory's class counts:
 *     a free slot; else if c is not a largest class, a random slot of a random largest class;
 *     else, with probability counts[c] / seen of c (random() against it), a random slot of c.
 *
 * seen_per_class grows by the offered labels (class-balanced: item by item, since its
 * probability reads it as it goes, as the Python copy seen_class does). Writes copy the packed
 * row and the label; each is listed (slot, offered index) in the order made.
 */
static void write_row(tinycl_replay_memory *memory, int32_t slot, const uint8_t *new_rows, const uint8_t *new_labels,
                      int32_t row)
{
    const uint8_t *from = new_rows + row * memory->row_bytes;
    uint8_t *to = memory->rows + slot * memory->row_bytes;
    int32_t i;
    for (i = 0; i < memory->row_bytes; ++i) {
        to[i] = from[i];
    }
    memory->labels[slot] = new_labels[row];
}

static int32_t update_recipe(tinycl_replay_memory *memory, const uint8_t *new_rows, const uint8_t *new_labels,
                             const int32_t *offered, int32_t count, int32_t batch_index, tinycl_pcg32 *rng,
                             int32_t *scratch, int32_t *slots, int32_t *items)
{
    const int32_t share = memory->capacity / (batch_index + 1);
    int32_t h = share < count ? share : count, free = 0, t;
    if (memory->policy == TINYCL_POLICY_RECIPE || memory->size == 0) {
        free = memory->capacity - memory->size < h ? memory->capacity - memory->size : h;
    }
    h = h < free + memory->size ? h : free + memory->size;
    pcg32_choice(rng, count, h, scratch, items);
    for (t = 0; t < free; ++t) {
        slots[t] = memory->size + t;
    }
    if (h > free) {
        pcg32_choice(rng, memory->size, h - free, scratch, slots + free);
    }
    memory->size += free;
    for (t = 0; t < h; ++t) {
        write_row(memory, slots[t], new_rows, new_labels, offered[items[t]]);
    }
    memory->seen += (uint32_t)count;
    return h;
}

static int32_t update_reservoir(tinycl_replay_memory *memory, const uint8_t *new_rows, const uint8_t *new_labels,
                                const int32_t *offered, int32_t count, tinycl_pcg32 *rng, int32_t *slots,
                                int32_t *items)
{
    int32_t k, writes = 0;
    for (k = 0; k < count; ++k) {
        int32_t slot;
        memory->seen += 1u;
        if (memory->size < memory->capacity) {
            slot = memory->size++;
        } else {
            const uint32_t j = pcg32_bounded(rng, memory->seen);
            if (j >= (uint32_t)memory->capacity) {
                continue;
            }
            slot = (int32_t)j;
        }
        write_row(memory, slot, new_rows, new_labels, offered[k]);
        slots[writes] = slot;
        items[writes++] = k;
    }
    return writes;
}

/* The (pick)-th slot holding label, in slot order. */
static int32_t nth_slot_of(const tinycl_replay_memory *memory, int32_t label, uint32_t pick)
{
    int32_t slot;
    for (slot = 0; slot < memory->size; ++slot) {
        if (memory->labels[slot] == label && pick-- == 0u) {
            return slot;
        }
    }
    return -1; /* not reached: callers pick below the class's count */
}

static int32_t update_class_balanced(tinycl_replay_memory *memory, const uint8_t *new_rows,
                                     const uint8_t *new_labels, const int32_t *offered, int32_t count,
                                     tinycl_pcg32 *rng, int32_t *slots, int32_t *items)
{
    int32_t *counts = memory->class_counts;
    int32_t k, c, writes = 0;
    for (c = 0; c < memory->num_classes; ++c) {
        counts[c] = 0;
    }
    for (k = 0; k < memory->size; ++k) {
        counts[memory->labels[k]] += 1;
    }
    for (k = 0; k < count; ++k) {
        const int32_t label = new_labels[offered[k]];
        int32_t slot, victim = label;
        memory->seen_per_class[label] += 1;
        memory->seen += 1u;
        if (memory->size < memory->capacity) {
            slot = memory->size++;
        } else {
            int32_t largest = 0, ties = 0;
            for (c = 0; c < memory->num_classes; ++c) {
                largest = counts[c] > largest ? counts[c] : largest;
            }
            if (counts[label] < largest) {
                uint32_t pick;
                for (c = 0; c < memory->num_classes; ++c) {
                    ties += counts[c] == largest;
                }
                pick = pcg32_bounded(rng, (uint32_t)ties);
                for (c = 0; c < memory->num_classes; ++c) {
                    if (counts[c] == largest && pick-- == 0u) {
                        victim = c;
                        break;
                    }
                }
            } else if (pcg32_random(rng) >= (double)counts[label] / (double)memory->seen_per_class[label]) {
                continue;
            }
            slot = nth_slot_of(memory, victim, pcg32_bounded(rng, (uint32_t)counts[victim]));
            counts[victim] -= 1;
        }
        counts[label] += 1;
        write_row(memory, slot, new_rows, new_labels, offered[k]);
        slots[writes] = slot;
        items[writes++] = k;
    }
    return writes;
}

int32_t replay_update(tinycl_replay_memory *memory, const uint8_t *new_rows, const uint8_t *new_labels,
                      const int32_t *offered, int32_t count, int32_t batch_index, tinycl_pcg32 *rng,
                      int32_t *scratch, int32_t *slots, int32_t *items)
{
    int32_t writes, k;
    if (count == 0 || memory->capacity == 0) {
        return 0;
    }
    if (memory->policy == TINYCL_POLICY_CLASS_BALANCED) {
        return update_class_balanced(memory, new_rows, new_labels, offered, count, rng, slots, items);
    }
    if (memory->policy == TINYCL_POLICY_RESERVOIR) {
        writes = update_reservoir(memory, new_rows, new_labels, offered, count, rng, slots, items);
    } else {
        writes = update_recipe(memory, new_rows, new_labels, offered, count, batch_index, rng, scratch, slots,
                               items);
    }
    for (k = 0; k < count; ++k) {
        memory->seen_per_class[new_labels[offered[k]]] += 1;
    }
    return writes;
}
