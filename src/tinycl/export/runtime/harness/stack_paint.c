/*
 * The stack's high-water mark, measured by painting (the usual MCU method): at startup every
 * word of the stack below the caller's frame is filled with a pattern; at the end the lowest
 * word no longer holding it is the deepest the stack went. The linker scripts (cortex_m4.ld,
 * rv32.ld) place the stack between __stack_bottom and __stack_top. On the host (a hosted
 * build, no linker symbols) nothing is measured and the high-water mark reads 0.
 */
#include <stdint.h>

void tinycl_stack_paint(void);
uint32_t tinycl_stack_high_water(void);

#if defined(__arm__) || defined(__riscv)
#define PAINT 0x5A17C0DEu
#define MARGIN_WORDS 16u /* left untouched below the painting function's own frame */

extern uint32_t __stack_bottom[];
extern uint32_t __stack_top[];

void tinycl_stack_paint(void)
{
    volatile uint32_t here = 0u;
    const uintptr_t end = (uintptr_t)&here - 4u * MARGIN_WORDS; /* an address, not a pointer into `here` */
    uint32_t *word = __stack_bottom;
    while ((uintptr_t)word < end) {
        *word++ = PAINT;
    }
}

uint32_t tinycl_stack_high_water(void)
{
    const uint32_t *word = __stack_bottom;
    while (word < __stack_top && *word == PAINT) {
        ++word;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)word);
}
#else
void tinycl_stack_paint(void)
{
}

uint32_t tinycl_stack_high_water(void)
{
    return 0u;
}
#endif
