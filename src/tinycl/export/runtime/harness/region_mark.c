/*
 * The region mark: an empty function the generated model calls between layers and the harness
 * calls between the steps of a frame (TINYCL_REGION_MARK in tinycl_model.h). It computes
 * nothing; it gives an instruction counter one address to watch: tools/tinycl_insn_count.c
 * (a QEMU plugin) records its instruction count at every call, and tinycl.export.measure
 * turns the differences into instructions per layer and per kernel. A debugger can break on
 * it to step layer by layer.
 *
 * It lives alone in this file so that no compiler (without link-time optimization) can
 * inline it away. Cost: a call and a return per mark, a few dozen marks per frame; build with
 * -DTINYCL_NO_REGION_MARKS to drop the calls (the unused function is then dropped by
 * --gc-sections on the MCU targets).
 */
void tinycl_region_mark(void);

void tinycl_region_mark(void)
{
}
