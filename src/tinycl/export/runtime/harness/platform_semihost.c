/*
 * tinycl_platform.h by semihosting: the debugger (here QEMU, -semihosting-config
 * enable=on,target=native) performs the calls on the host. Operation numbers and parameter
 * blocks from Arm's "Semihosting for AArch32 and AArch64" specification, which the RISC-V
 * semihosting specification reuses; the trap itself (bkpt 0xAB on Cortex-M, the
 * slli/ebreak/srai sequence on RISC-V) is tinycl_semihost_call in each startup file.
 * Parameter blocks are arrays of pointer-sized words (32-bit on both targets).
 */
#include <stdint.h>

#include "tinycl_platform.h"

#define SYS_OPEN 0x01
#define SYS_CLOSE 0x02
#define SYS_WRITE0 0x04
#define SYS_WRITE 0x05
#define SYS_READ 0x06
#define SYS_EXIT_EXTENDED 0x20
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define OPEN_MODE_RB 1 /* fopen mode "rb" */
#define OPEN_MODE_WB 5 /* fopen mode "wb" */

int32_t tinycl_semihost_call(int32_t operation, void *parameters); /* startup_*.S */
void tinycl_exit(int32_t code);
void tinycl_fault(void);

static uintptr_t text_length(const char *text)
{
    uintptr_t length = 0;
    while (text[length] != '\0') {
        ++length;
    }
    return length;
}

int32_t platform_open(const char *path, int32_t for_writing)
{
    uintptr_t block[3];
    block[0] = (uintptr_t)path;
    block[1] = for_writing ? OPEN_MODE_WB : OPEN_MODE_RB;
    block[2] = text_length(path);
    return tinycl_semihost_call(SYS_OPEN, block);
}

int32_t platform_read(int32_t handle, void *buffer, int32_t bytes)
{
    uintptr_t block[3];
    block[0] = (uintptr_t)handle;
    block[1] = (uintptr_t)buffer;
    block[2] = (uintptr_t)bytes;
    return bytes - tinycl_semihost_call(SYS_READ, block); /* SYS_READ returns bytes NOT read */
}

int32_t platform_write(int32_t handle, const void *buffer, int32_t bytes)
{
    uintptr_t block[3];
    block[0] = (uintptr_t)handle;
    block[1] = (uintptr_t)buffer;
    block[2] = (uintptr_t)bytes;
    return bytes - tinycl_semihost_call(SYS_WRITE, block); /* returns bytes NOT written */
}

void platform_close(int32_t handle)
{
    uintptr_t block[1];
    block[0] = (uintptr_t)handle;
    tinycl_semihost_call(SYS_CLOSE, block);
}

void platform_print(const char *text)
{
    tinycl_semihost_call(SYS_WRITE0, (void *)(uintptr_t)text);
}

/* Called by the startup code with main's return value: it becomes QEMU's exit status
 * (SYS_EXIT_EXTENDED carries a status on 32-bit targets, plain SYS_EXIT does not). */
void tinycl_exit(int32_t code)
{
    uintptr_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uintptr_t)code;
    tinycl_semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
    }
}

/* Every exception and trap lands here: a fault must end the run with a status, not hang. */
void tinycl_fault(void)
{
    platform_print("tinycl: CPU fault or unexpected trap\n");
    tinycl_exit(3);
}
