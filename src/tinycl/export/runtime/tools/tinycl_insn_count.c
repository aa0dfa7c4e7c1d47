/*
 * tinycl_insn_count: a QEMU TCG plugin that counts executed guest instructions, in total and
 * between the region marks of an exported tinycl program (calls to tinycl_region_mark, an
 * empty function of harness/region_mark.c, placed between layers by the generator).
 *
 *     qemu-system-arm ... -plugin build/tinycl_insn_count.so,mark=0xADDR,out=FILE -kernel X.elf
 *
 * mark: the guest address of tinycl_region_mark (from the ELF symbol table, Thumb bit
 * cleared); out: the file written at exit:
 *
 *     tinycl-insn-count 1
 *     total <instructions executed by the whole program>
 *     marks <K>
 *     <K lines: instructions executed before the k-th call of tinycl_region_mark>
 *
 * Debian's QEMU 7.2 loads plugins (-plugin) but ships no qemu-plugin.h, so the few API
 * functions used here are declared below, with the types of QEMU's include/qemu/qemu-plugin.h
 * (plugin API version 1, which QEMU 7.2 loads; QEMU refuses a version it does not support).
 * Counting: each translated block gets an inline "add its instruction count to a counter"
 * (no helper call, so no visible slowdown); the block at the mark address instead gets a
 * callback that first records the counter, then adds. The count is of instructions QEMU
 * executes for the guest: deterministic for a given binary and input, independent of timing,
 * of the host and of block chaining. Thumb instructions skipped inside an IT block are counted
 * (they issue on a Cortex-M4 too).
 * This is host code (a shared library QEMU loads), not part of the device runtime.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the part of QEMU's plugin API (include/qemu/qemu-plugin.h, version 1) used here ---- */
typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t; /* passed at install, never read here */
struct qemu_plugin_tb;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

#define EXPORT __attribute__((visibility("default")))
EXPORT int qemu_plugin_version = 1;

/* ---- the counter ------------------------------------------------------------------------ */
static uint64_t executed;   /* instructions executed so far (one vCPU: the MCU's single core) */
static uint64_t mark_vaddr = UINT64_MAX;
static uint64_t *marks;     /* counter value at each call of the mark function */
static size_t mark_count, mark_capacity;
static char out_path[4096];
static int out_of_memory;

static void on_mark(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    if (mark_count == mark_capacity && !out_of_memory) {
        size_t capacity = mark_capacity ? 2 * mark_capacity : 4096;
        uint64_t *grown = realloc(marks, capacity * sizeof *marks);
        if (grown == NULL) {
            out_of_memory = 1;
        } else {
            marks = grown;
            mark_capacity = capacity;
        }
    }
    if (mark_count < mark_capacity) {
        marks[mark_count++] = executed;
    }
    executed += (uint64_t)(uintptr_t)userdata; /* the mark block's own instructions */
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    if (qemu_plugin_tb_vaddr(tb) == mark_vaddr) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_mark, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
    } else {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    }
}

static void write_counts(qemu_plugin_id_t id, void *userdata)
{
    char line[128];
    size_t k;
    (void)id;
    (void)userdata;
    snprintf(line, sizeof line, "tinycl_insn_count: %llu instructions, %llu marks\n",
             (unsigned long long)executed, (unsigned long long)mark_count);
    qemu_plugin_outs(line);
    if (out_path[0] != '\0') {
        FILE *out = fopen(out_path, "w");
        if (out == NULL) {
            qemu_plugin_outs("tinycl_insn_count: cannot write the output file\n");
            return;
        }
        fprintf(out, "tinycl-insn-count 1\ntotal %llu\nmarks %llu\n", (unsigned long long)executed,
                out_of_memory ? 0ull : (unsigned long long)mark_count);
        for (k = 0; !out_of_memory && k < mark_count; ++k) {
            fprintf(out, "%llu\n", (unsigned long long)marks[k]);
        }
        fclose(out);
    }
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        if (strncmp(argv[i], "mark=", 5) == 0) {
            mark_vaddr = strtoull(argv[i] + 5, NULL, 0);
        } else if (strncmp(argv[i], "out=", 4) == 0 && strlen(argv[i] + 4) < sizeof out_path) {
            strcpy(out_path, argv[i] + 4);
        } else {
            fprintf(stderr, "tinycl_insn_count: unknown argument %s (expected mark=ADDR, out=FILE)\n", argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_counts, NULL);
    return 0;
}
