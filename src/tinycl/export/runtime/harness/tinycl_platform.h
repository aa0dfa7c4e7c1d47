/*
 * What the harness needs from the platform: files, text output, exit. Two implementations:
 * platform_host.c (stdio, for the host build) and platform_semihost.c (Arm / RISC-V
 * semihosting, for bare-metal builds under QEMU or a debugger; files are the host's).
 */
#ifndef TINYCL_PLATFORM_H
#define TINYCL_PLATFORM_H

#include <stdint.h>

/* Returns a handle >= 0, or -1 when the file cannot be opened. */
int32_t platform_open(const char *path, int32_t for_writing);
/* Return the number of bytes transferred (fewer than asked on end of file or error). */
int32_t platform_read(int32_t handle, void *buffer, int32_t bytes);
int32_t platform_write(int32_t handle, const void *buffer, int32_t bytes);
void platform_close(int32_t handle);
/* Writes a NUL-terminated line of text to the console (stdout under QEMU). */
void platform_print(const char *text);

#endif /* TINYCL_PLATFORM_H */
