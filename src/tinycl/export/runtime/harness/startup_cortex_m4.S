/*
 * Startup for a Cortex-M4F (QEMU mps2-an386, or any ARMv7E-M part with FPv4-SP): vector
 * table, reset handler (FPU on, .data copied from flash, .bss and .ext_bss zeroed, main, exit through
 * semihosting) and the semihosting trap. No C library. Symbols come from cortex_m4.ld.
 */
    .syntax unified
    .cpu cortex-m4
    .fpu fpv4-sp-d16
    .thumb

    .section .vectors, "a"
    .align 2
    .global tinycl_vectors
tinycl_vectors:
    .word __stack_top           /* initial main stack pointer */
    .word reset_handler
    .word fault_handler         /* NMI */
    .word fault_handler         /* HardFault */
    .word fault_handler         /* MemManage */
    .word fault_handler         /* BusFault */
    .word fault_handler         /* UsageFault */
    .word 0, 0, 0, 0            /* reserved */
    .word fault_handler         /* SVCall */
    .word fault_handler         /* DebugMonitor */
    .word 0                     /* reserved */
    .word fault_handler         /* PendSV */
    .word fault_handler         /* SysTick */

    .text
    .thumb_func
    .global reset_handler
reset_handler:
    /* CP10 and CP11 full access (CPACR bits 20-23): every FP instruction faults until then,
       so this runs before any C code (ARMv7-M Architecture Reference Manual, B3.2.20). */
    ldr r0, =0xE000ED88
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb
    /* .data: initial values live in flash after .text; copy them to RAM */
    ldr r0, =__data_load
    ldr r1, =__data_start
    ldr r2, =__data_end
1:  cmp r1, r2
    bhs 2f
    ldr r3, [r0], #4
    str r3, [r1], #4
    b 1b
2:  ldr r1, =__bss_start
    ldr r2, =__bss_end
    movs r3, #0
3:  cmp r1, r2
    bhs 4f
    str r3, [r1], #4
    b 3b
4:  ldr r1, =__ext_bss_start    /* the external RAM's zero-initialized buffers (cortex_m4.ld) */
    ldr r2, =__ext_bss_end
7:  cmp r1, r2
    bhs 8f
    str r3, [r1], #4
    b 7b
8:  bl main
    bl tinycl_exit              /* r0 = main's return value */
5:  b 5b

    .thumb_func
fault_handler:
    ldr r0, =__stack_top        /* a fresh stack: the fault may come from a broken one */
    mov sp, r0
    bl tinycl_fault
6:  b 6b

    /* int32_t tinycl_semihost_call(int32_t operation, void *parameters): r0, r1 in, r0 out */
    .thumb_func
    .global tinycl_semihost_call
tinycl_semihost_call:
    bkpt 0xAB
    bx lr
