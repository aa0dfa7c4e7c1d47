/*
 * Startup for an RV32IMFC hart in machine mode (QEMU virt with -bios none: the reset ROM
 * jumps to the ELF entry): global and stack pointers, trap vector, FPU on, .bss and .ext_bss zeroed,
 * main, exit through semihosting; and the semihosting trap. No C library. Symbols come from
 * rv32.ld. Everything is linked into RAM (the loader places .data), so nothing is copied.
 */
    .section .text.init, "ax"
    .global _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, __stack_top
    la t0, trap_entry
    csrw mtvec, t0
    /* mstatus.FS = Initial: with FS Off (the reset value) every F instruction traps
       (RISC-V Privileged ISA, 3.1.6.6) */
    li t0, 0x2000
    csrs mstatus, t0
    csrw fcsr, zero             /* round to nearest even, no flags */
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sw zero, 0(t0)
    addi t0, t0, 4
    j 1b
2:  la t0, __ext_bss_start      /* the external RAM's zero-initialized buffers (rv32.ld) */
    la t1, __ext_bss_end
5:  bgeu t0, t1, 6f
    sw zero, 0(t0)
    addi t0, t0, 4
    j 5b
6:  call main
    call tinycl_exit            /* a0 = main's return value */
3:  j 3b

    .balign 4                   /* mtvec needs a 4-byte aligned direct-mode vector */
trap_entry:
    la sp, __stack_top          /* a fresh stack: the trap may come from a broken one */
    call tinycl_fault
4:  j 4b

    /* int32_t tinycl_semihost_call(int32_t operation, void *parameters): a0, a1 in, a0 out.
       The RISC-V semihosting trap is this exact uncompressed three-instruction sequence,
       which must not straddle a page: hence norvc and the 16-byte alignment. */
    .text
    .option push
    .option norvc
    .balign 16
    .global tinycl_semihost_call
tinycl_semihost_call:
    slli zero, zero, 0x1f
    ebreak
    srai zero, zero, 7
    ret
    .option pop
