/* tinycl_platform.h on a hosted C library (the host build): stdio files and stdout. */
#include <stdio.h>

#include "tinycl_platform.h"

#define MAX_FILES 8

static FILE *files[MAX_FILES];

int32_t platform_open(const char *path, int32_t for_writing)
{
    int32_t handle;
    for (handle = 0; handle < MAX_FILES; ++handle) {
        if (files[handle] == 0) {
            files[handle] = fopen(path, for_writing ? "wb" : "rb");
            return files[handle] != 0 ? handle : -1;
        }
    }
    return -1;
}

int32_t platform_read(int32_t handle, void *buffer, int32_t bytes)
{
    return (int32_t)fread(buffer, 1, (size_t)bytes, files[handle]);
}

int32_t platform_write(int32_t handle, const void *buffer, int32_t bytes)
{
    return (int32_t)fwrite(buffer, 1, (size_t)bytes, files[handle]);
}

void platform_close(int32_t handle)
{
    fclose(files[handle]);
    files[handle] = 0;
}

void platform_print(const char *text)
{
    fputs(text, stdout);
    fflush(stdout);
}
