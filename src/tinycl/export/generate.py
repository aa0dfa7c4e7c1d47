"""Write a ``Deployment`` as a self-contained C99 project.

The project folder holds:

- ``runtime/``: the kernels (copied from the package; see ``runtime/tinycl_runtime.h``);
- ``harness/``: ``main.c`` (the verification program), the platform layers (stdio or
  semihosting), startup files and linker scripts of the bare-metal targets;
- ``tinycl_model.h``: every size (input, LR layer, classes, replay rows, static buffers)
  and the generated functions' prototypes;
- ``tinycl_model_data.c``: the constants (input table, INT8 weights, int32 biases,
  multipliers and shifts, latent quantizer parameters, FP32 adaptive weights, the replay
  memory) as ``const`` arrays, i.e. flash on a device; floats as exact hexadecimal literals;
- ``tinycl_model.c``: ``tinycl_frozen_forward``, ``tinycl_latent_encode`` and
  ``tinycl_adaptive_forward``, a straight sequence of kernel calls over static buffers
  (two ping-pong buffers per stage, each sized for the largest activation it holds), with a
  region mark (``TINYCL_REGION_MARK``, ``harness/region_mark.c``) between calls;
- ``tools/tinycl_insn_count.c``: the QEMU plugin that counts instructions between marks;
- ``Makefile.host``, ``Makefile.cortex-m4``, ``Makefile.rv32`` (``make -f Makefile.T run``;
  on the QEMU targets also ``make -f Makefile.T count``).

``generate_project`` computes every file and size in memory (so that a configuration can be
refused before anything is written); ``write_project`` writes them. Both describe the
program's *regions*, the stretches between two marks, in the order one frame (and one replay
row) runs them: ``tinycl.export.measure`` attributes counted instructions to them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from tinycl.errors import TinyclError
from tinycl.export.deployment import (
    ActivationOp,
    AvgPoolOp,
    BatchNormOp,
    ConvOp,
    Deployment,
    FlattenOp,
    LinearOp,
)
from tinycl.export.reference import (
    input_table_s8,
    latent_clip_multipliers,
    latent_groups,
    latent_offset,
    latent_step_fp32,
)
from tinycl.export.toolchains import HOST_CC, PLUGIN_CFLAGS, PLUGIN_FILE, TARGETS, Target
from tinycl.quant.int_blocks import IntBlock
from tinycl.quant.int_frozen import IntConvLayer

RUNTIME_DIR = Path(__file__).parent / "runtime"
HARNESS_FILES = ("main.c", "tinycl_platform.h", "platform_host.c", "platform_semihost.c", "baremetal_mem.c",
                 "region_mark.c", "startup_cortex_m4.S", "cortex_m4.ld", "startup_rv32.S", "rv32.ld")
TOOL_FILES = ("tinycl_insn_count.c",)
MARK = "    TINYCL_REGION_MARK();"
VALUES_PER_LINE = 16
INT8_KERNELS = {"conv": "conv2d_u8", "dw": "depthwise_conv2d_u8", "pw": "pointwise_conv2d_u8"}
# conv units of integer blocks by kind, {sign}: the input codes' type (s8 or u8); only the image
# feeds a dense conv (MobileNetV2's first)
BLOCK_KERNELS = {"conv": "conv2d_{sign}_range", "dw": "depthwise_conv2d_{sign}_range",
                 "pw": "pointwise_conv2d_{sign}_range"}
FP32_KERNELS = {"conv": "conv2d_fp32_fw", "dw": "depthwise_fp32_fw", "pw": "pointwise_fp32_fw"}
C_TYPES = {"int8_t": 1, "uint8_t": 1, "int32_t": 4, "float": 4}


@dataclass(frozen=True)
class Region:
    """The code between two region marks: one kernel call (with the call's own overhead).

    ``stage``: frozen | latent | adaptive | harness. ``layer``: the layer index in
    ``tinycl layers`` / ``tinycl cost`` numbering (frozen layer i is layer i; an adaptive
    BN or ReLU belongs to the conv before it), None for the latent and harness steps.
    ``macs``: multiply-accumulates from the shapes (padded taps counted, as the cost model
    counts them; a pooling window's adds; 0 for element-wise kernels). ``values``: values
    the kernel writes.
    """

    name: str
    kernel: str
    stage: str
    layer: int | None = None
    macs: int = 0
    values: int = 0


# the harness's steps around the model (runtime/harness/main.c marks them)
OUTPUT_REGION = Region("output", "", "harness")  # argmax, writing the results, reading the next frame


@dataclass
class ExportedProject:
    """What ``generate_project`` computed / ``write_project`` wrote: static memory by C symbol
    (bytes) and the regions between marks.

    ``buffers``: zero-initialized RAM (``tinycl_model.c`` and the harness's frame, LR and
    logits buffers); ``constants``: read-only arrays (flash on an MCU). ``frame_regions``:
    what one frame runs, mark after mark (the last region runs until the next frame's first
    mark); ``replay_regions``: the same for one exported replay row. ``files``: the generated
    files' text by relative path (the runtime is copied, not listed).
    """

    root: Path | None
    buffers: dict[str, int] = field(default_factory=dict)
    constants: dict[str, int] = field(default_factory=dict)
    frame_regions: list[Region] = field(default_factory=list)
    replay_regions: list[Region] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def buffer_bytes(self) -> int:
        return sum(self.buffers.values())

    @property
    def constant_bytes(self) -> int:
        return sum(self.constants.values())


def float_literal(value: float) -> str:
    """An exact C float literal (hexadecimal: no decimal rounding on either side)."""
    if not np.isfinite(value):
        raise TinyclError(f"cannot export a non-finite weight ({value})")
    mantissa, _, exponent = float(value).hex().partition("p")
    mantissa = mantissa.rstrip("0")
    if mantissa.endswith("."):
        mantissa += "0"
    return f"{mantissa}p{exponent}f"


class CWriter:
    """Collects the constant arrays (definitions and extern declarations) of one project."""

    def __init__(self) -> None:
        self.definitions: list[str] = []
        self.declarations: list[str] = []
        self.constants: dict[str, int] = {}

    def array(self, ctype: str, name: str, values: np.ndarray | torch.Tensor, comment: str = "") -> str:
        flat = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values).ravel()
        if flat.size == 0:
            raise TinyclError(f"{name}: cannot export an empty array")
        if ctype == "float":
            items = [float_literal(v) for v in flat.astype(np.float32).tolist()]
        else:
            items = [str(int(v)) for v in flat.tolist()]
        lines = [", ".join(items[i : i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
        note = f"/* {comment} */\n" if comment else ""
        body = ",\n    ".join(lines)
        self.definitions.append(f"{note}const {ctype} {name}[{flat.size}] = {{\n    {body}\n}};\n")
        self.declarations.append(f"extern const {ctype} {name}[{flat.size}];")
        self.constants[name] = flat.size * C_TYPES[ctype]
        return name

    def shape(self, name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: tuple[int, int],
              stride: int, padding: int) -> str:
        fields = [*in_shape, *out_shape, *kernel, stride, padding]
        self.definitions.append(f"const tinycl_conv_shape {name} = {{{', '.join(str(int(v)) for v in fields)}}};\n")
        self.declarations.append(f"extern const tinycl_conv_shape {name};")
        self.constants[name] = 40
        return name


class Buffers:
    """Static buffers of one stage, sized by the largest activation each holds: two ping-pong
    buffers, a third where a residual block keeps its input while its convs run."""

    def __init__(self, prefix: str, ctype: str, count: int = 2) -> None:
        self.prefix, self.ctype = prefix, ctype
        self.values = [0] * count

    def use(self, index: int, values: int) -> str:
        self.values[index] = max(self.values[index], int(values))
        return f"{self.prefix}{index}"

    def definitions(self) -> list[str]:
        return [f"static {self.ctype} {self.prefix}{i}[{v}];" for i, v in enumerate(self.values) if v]

    def sizes(self) -> dict[str, int]:
        return {f"{self.prefix}{i}": v * C_TYPES[self.ctype] for i, v in enumerate(self.values) if v}


def conv_macs(shape: tuple[int, ...], out_shape: tuple[int, ...], kernel: tuple[int, int], groups: int) -> int:
    """C_out H_out W_out (C_in / g) k_h k_w: padded taps counted (tinycl.device.costs)."""
    return int(np.prod(out_shape)) * (shape[0] // groups) * kernel[0] * kernel[1]


def conv_constants(out: CWriter, name: str, conv: IntConvLayer, in_shape: tuple[int, ...],
                   shape: tuple[int, ...], what: str) -> tuple[int, int]:
    """A conv's geometry and integer parameters as constants ``{name}_*``; returns its kernel size."""
    kernel = (int(conv.weight_s8.shape[2]), int(conv.weight_s8.shape[3]))
    out.shape(f"{name}_shape", in_shape, shape, kernel, conv.stride, conv.padding)
    out.array("int8_t", f"{name}_weight", conv.weight_s8,
              f"{what} ({conv.kind}): INT8 weights {list(conv.weight_s8.shape)}, BN folded")
    out.array("int32_t", f"{name}_bias", conv.bias_s32)
    out.array("int32_t", f"{name}_multiplier", conv.multiplier)
    out.array("int32_t", f"{name}_right_shift", conv.right_shift)
    return kernel


def block_code(block: IntBlock, i: int, source: str, slot: int | None, in_shape: tuple[int, ...],
               target: str | None, buffers: Buffers, out: CWriter) -> tuple[list[str], list[Region], str, int | None]:
    """The calls of one integer block (``tinycl.quant.int_blocks``): each conv unit into a free
    buffer (the block input's stays untouched while a residual add needs it), the add in place
    into the bottleneck's buffer; ``target`` (the LR buffer) takes the block's last output.
    Returns the calls, regions, the output buffer and its slot (None: ``target``)."""
    body: list[str] = []
    regions: list[Region] = []
    current, current_slot, shape, signed = source, slot, in_shape, block.input_signed
    for u, unit in enumerate(block.units):
        name = f"tinycl_frozen{i}_{u}"
        out_shape = (unit.out_channels, *unit.output_hw(shape[1], shape[2]))
        kernel = conv_constants(out, name, unit.conv, shape, out_shape, f"frozen layer {i} conv {u}, {unit.kind}")
        last = u == len(block.units) - 1
        if last and block.add is None and target is not None:
            dest, dest_slot = target, None
        else:
            dest_slot = next(k for k in range(len(buffers.values)) if k not in (current_slot, slot))
            dest = buffers.use(dest_slot, int(np.prod(out_shape)))
        function = BLOCK_KERNELS[unit.conv.kind].format(sign="s8" if signed else "u8")
        cast = "(const int8_t *)" if signed else "(const uint8_t *)"
        body += [MARK, f"    {function}({cast}{current}, &{name}_shape, {name}_weight, {name}_bias, "
                       f"{name}_multiplier, {name}_right_shift, {unit.lo}, {unit.hi}, {dest}); "
                       f"/* {unit.kind} {list(shape)} -> {list(out_shape)} */"]
        regions.append(Region(f"frozen{i}.{u}", function, "frozen", i,
                              conv_macs(shape, out_shape, kernel, unit.conv.groups), int(np.prod(out_shape))))
        current, current_slot, shape, signed = dest, dest_slot, out_shape, unit.output_signed
    if block.add is not None:
        a = block.add
        out.array("int32_t", f"tinycl_frozen{i}_add_multiplier", np.array([*a.multipliers, a.output_multiplier]),
                  f"frozen layer {i} residual add: input, bottleneck, output multipliers (int_blocks.make_int_add)")
        out.array("int32_t", f"tinycl_frozen{i}_add_right_shift", np.array([*a.right_shifts, a.output_right_shift]))
        dest = target if target is not None else current
        values = int(np.prod(shape))
        body += [MARK, f"    residual_add_s8((const uint8_t *){source}, {int(block.input_signed)}, "
                       f"(const int8_t *){current}, {values}, "
                       f"tinycl_frozen{i}_add_multiplier, tinycl_frozen{i}_add_right_shift, (int8_t *){dest}); "
                       f"/* {list(shape)} */"]
        regions.append(Region(f"frozen{i}.add", "residual_add_s8", "frozen", i, 0, values))
        current, current_slot = dest, (None if target is not None else current_slot)
    return body, regions, current, current_slot


def frozen_code(dep: Deployment, out: CWriter) -> tuple[list[str], Buffers, list[Region]]:
    """Constants, calls and regions of the INT8 frozen stage (``tinycl_frozen_forward``'s body)."""
    channels, height, width = dep.input_shape
    out.array("int8_t", "tinycl_input_table", input_table_s8(dep.stage.input_scale, channels),
              "camera byte -> INT8 input code, per channel [C][256] (reference.input_table_s8)")
    has_blocks = any(isinstance(layer, IntBlock) for layer in dep.stage.layers)
    buffers = Buffers("tinycl_frozen_act", "uint8_t", 3 if has_blocks else 2)
    body = [f"    rgb_u8_to_input_s8(rgb_hwc, {height}, {width}, {channels}, tinycl_input_table, tinycl_input_s8);"]
    regions = [Region("input", "rgb_u8_to_input_s8", "frozen", None, 0, int(np.prod(dep.input_shape)))]
    source, slot, in_shape = "tinycl_input_s8", None, dep.input_shape
    shapes = dep.frozen_shapes
    for i, (layer, shape) in enumerate(zip(dep.stage.layers, shapes, strict=True)):
        last = i == len(shapes) - 1
        if isinstance(layer, IntBlock):
            calls, block_regions, source, slot = block_code(layer, i, source, slot, in_shape,
                                                            "lr_u8" if last else None, buffers, out)
            body += calls
            regions += block_regions
            in_shape = shape
            continue
        name = f"tinycl_frozen{i}"
        kernel = conv_constants(out, name, layer, in_shape, shape, f"frozen layer {i}")
        slot = None if last else next(k for k in range(len(buffers.values)) if k != slot)
        target = "lr_u8" if last else buffers.use(slot, int(np.prod(shape)))
        function = "conv2d_s8" if i == 0 else INT8_KERNELS[layer.kind]
        body += [MARK, f"    {function}({source}, &{name}_shape, {name}_weight, {name}_bias, {name}_multiplier, "
                       f"{name}_right_shift, {target}); /* {list(in_shape)} -> {list(shape)} */"]
        regions.append(Region(f"frozen{i}", function, "frozen", i, conv_macs(in_shape, shape, kernel, layer.groups),
                              int(np.prod(shape))))
        source, in_shape = target, shape
    return body, buffers, regions


def latent_code(dep: Deployment, out: CWriter) -> tuple[list[str], Region]:
    """Constants, calls and region of the Q-bit latent quantizer (``tinycl_latent_encode``'s body)."""
    q = dep.quantizer
    groups = latent_groups(q, dep.latent_shape[0])
    size = dep.latent_values // groups
    out.array("float", "tinycl_latent_step", latent_step_fp32(q),
              "code -> FP32 latent factor per group (LatentQuantizer.decode)")
    if q.mode == "shift" and q.signed:  # INT8 LR layer: offset-binary codes
        return ([f"    latent_shift_s8((const int8_t *)lr_u8, {dep.latent_values}, {q.bits}, codes);"],
                Region("latent_encode", "latent_shift_s8", "latent", None, 0, dep.latent_values))
    if q.mode == "shift":
        return ([f"    latent_shift_u8(lr_u8, {dep.latent_values}, {q.bits}, codes);"],
                Region("latent_encode", "latent_shift_u8", "latent", None, 0, dep.latent_values))
    multiplier, right_shift = latent_clip_multipliers(q.clip_u8, q.bits)
    out.array("int32_t", "tinycl_latent_multiplier", multiplier,
              f"clip mode: (2**Q - 1) / clip as multiplier * 2**-right_shift; clip_u8 = {list(map(int, q.clip_u8))}"
              if len(q.clip_u8) <= 8 else "clip mode: (2**Q - 1) / clip as multiplier * 2**-right_shift")
    out.array("int32_t", "tinycl_latent_right_shift", right_shift)
    return ([f"    latent_clip_u8(lr_u8, {groups}, {size}, tinycl_latent_multiplier, tinycl_latent_right_shift, "
             f"{q.bits}, codes);"], Region("latent_encode", "latent_clip_u8", "latent", None, 0, dep.latent_values))


def adaptive_code(dep: Deployment, out: CWriter) -> tuple[list[str], Buffers, list[Region]]:
    """Constants, calls and regions of the FP32 adaptive stage (``tinycl_adaptive_forward``'s body)."""
    buffers = Buffers("tinycl_adaptive_act", "float")
    groups = latent_groups(dep.quantizer, dep.latent_shape[0])
    current = buffers.use(0, dep.latent_values)
    body = [f"    latent_decode_fp32(codes, {groups}, {dep.latent_values // groups}, tinycl_latent_step, "
            f"TINYCL_LATENT_OFFSET, {current});"]
    regions = [Region("latent_decode", "latent_decode_fp32", "latent", None, 0, dep.latent_values)]
    shapes = dep.adaptive_shapes()
    last = max(j for j, op in enumerate(dep.adaptive) if not isinstance(op, FlattenOp))
    in_shape: tuple[int, ...] = dep.latent_shape
    layer = len(dep.stage.layers) - 1  # the LR layer; each conv, pool or linear op starts the next layer
    for j, (op, shape) in enumerate(zip(dep.adaptive, shapes, strict=True)):
        name = f"tinycl_adaptive{j}"
        elementwise = isinstance(op, (BatchNormOp, ActivationOp))
        if isinstance(op, FlattenOp):
            body.append(f"    /* op {j}: flatten {list(in_shape)} -> {list(shape)}: CHW is already flat */")
            in_shape = shape
            continue
        if not elementwise:
            layer += 1
        if j == last:
            target = "logits"
        else:
            index = int(current[-1]) if elementwise else 1 - int(current[-1])
            target = buffers.use(index, int(np.prod(shape)))  # elementwise ops run in place
        note = f" /* op {j}: {list(in_shape)} -> {list(shape)} */"
        macs = 0
        if isinstance(op, ConvOp):
            out.shape(f"{name}_shape", in_shape, shape, tuple(op.weight.shape[2:]), op.stride, op.padding)
            out.array("float", f"{name}_weight", op.weight, f"adaptive op {j} ({op.kind} conv) {list(op.weight.shape)}")
            bias = out.array("float", f"{name}_bias", op.bias) if op.bias is not None else "0"
            kernel = FP32_KERNELS[op.kind]
            call = f"{kernel}({current}, &{name}_shape, {name}_weight, {bias}, {target});"
            macs = conv_macs(in_shape, shape, tuple(op.weight.shape[2:]), in_shape[0] if op.kind == "dw" else 1)
        elif isinstance(op, BatchNormOp):
            out.array("float", f"{name}_scale", op.scale, f"adaptive op {j}: BN in inference form")
            out.array("float", f"{name}_shift", op.shift)
            spatial = int(np.prod(shape[1:]))
            kernel = "batch_norm_fp32_fw"
            call = f"batch_norm_fp32_fw({current}, {shape[0]}, {spatial}, {name}_scale, {name}_shift, {target});"
        elif isinstance(op, ActivationOp):
            kernel = f"{op.kind}_fp32_fw"
            call = f"{kernel}({current}, {int(np.prod(shape))}, {target});"
        elif isinstance(op, AvgPoolOp):
            window = (in_shape[1], in_shape[2]) if op.kernel_h == 0 else (op.kernel_h, op.kernel_w)
            out.shape(f"{name}_shape", in_shape, shape, window, op.stride if op.kernel_h else 1, 0)
            kernel = "avgpool_fp32_fw"
            call = f"avgpool_fp32_fw({current}, &{name}_shape, {target});"
            macs = int(np.prod(shape)) * window[0] * window[1]  # one add per value in each window
        elif isinstance(op, LinearOp):
            out.array("float", f"{name}_weight", op.weight, f"adaptive op {j} (linear) {list(op.weight.shape)}")
            bias = out.array("float", f"{name}_bias", op.bias) if op.bias is not None else "0"
            kernel = "linear_fp32_fw"
            call = f"linear_fp32_fw({current}, {in_shape[0]}, {name}_weight, {bias}, {shape[0]}, {target});"
            macs = int(op.weight.numel())
        body += [MARK, f"    {call}{note}"]
        regions.append(Region(f"adaptive{j}", kernel, "adaptive", layer, macs, int(np.prod(shape))))
        current, in_shape = target, shape
    return body, buffers, regions


def describe(dep: Deployment) -> str:
    facts = [f"{k}={v}" for k, v in sorted(dep.meta.items())]
    q = dep.quantizer
    facts += [f"input {'x'.join(map(str, dep.input_shape))}", f"LR {'x'.join(map(str, dep.latent_shape))}",
              f"Q={q.bits} ({q.mode}{', per channel' if q.per_channel else ''})",
              f"{dep.num_classes} classes", f"{0 if dep.replay_rows is None else len(dep.replay_rows)} replay rows"]
    return "; ".join(facts).replace("*/", "* /")


def model_header(dep: Deployment, writer: CWriter, buffer_sizes: dict[str, int]) -> str:
    channels, height, width = dep.input_shape
    lr_c, lr_h, lr_w = dep.latent_shape
    replay_rows = 0 if dep.replay_rows is None else len(dep.replay_rows)
    label_type = "uint8_t" if dep.num_classes <= 256 else "int32_t"
    sizes = "\n".join(f"#define {name.upper()}_BYTES {size}" for name, size in buffer_sizes.items())
    return f"""/* Generated by tinycl export: {describe(dep)}. Do not edit. */
#ifndef TINYCL_MODEL_H
#define TINYCL_MODEL_H

#include <stdint.h>

#include "tinycl_runtime.h"

#define TINYCL_INPUT_CHANNELS {channels}
#define TINYCL_INPUT_HEIGHT {height}
#define TINYCL_INPUT_WIDTH {width}
#define TINYCL_INPUT_BYTES {channels * height * width} /* camera frame, uint8 HWC */
#define TINYCL_FROZEN_LAYERS {len(dep.stage.layers)}
#define TINYCL_LR_CHANNELS {lr_c}
#define TINYCL_LR_HEIGHT {lr_h}
#define TINYCL_LR_WIDTH {lr_w}
#define TINYCL_LR_VALUES {dep.latent_values}
#define TINYCL_LR_BITS {dep.bits}
#define TINYCL_LR_SIGNED {int(dep.quantizer.signed)} /* 1: INT8 LR layer (linear bottleneck or residual sum) */
#define TINYCL_LATENT_OFFSET {latent_offset(dep.quantizer)} /* offset-binary codes: 2**(Q-1) when signed */
#define TINYCL_LR_ROW_BYTES {dep.row_bytes} /* one packed latent: ceil(D * Q / 8) */
#define TINYCL_NUM_CLASSES {dep.num_classes}
#define TINYCL_REPLAY_ROWS {replay_rows}

/* static buffers of tinycl_model.c, bytes */
{sizes}

typedef {label_type} tinycl_label_t;

/* camera frame uint8 [H][W][C] -> the LR layer's codes [C][H][W], one byte each (INT8 in two's
 * complement when TINYCL_LR_SIGNED) */
void tinycl_frozen_forward(const uint8_t *rgb_hwc, uint8_t *lr_u8);
/* LR layer codes -> Q-bit codes [C][H][W] */
void tinycl_latent_encode(const uint8_t *lr_u8, uint8_t *codes);
/* Q-bit codes -> FP32 logits [TINYCL_NUM_CLASSES] */
void tinycl_adaptive_forward(const uint8_t *codes, float *logits);

/* Region marks between kernel calls (harness/region_mark.c): an instruction counter
 * (tools/tinycl_insn_count.c) attributes instructions to layers by them. A call and a
 * return per mark; -DTINYCL_NO_REGION_MARKS compiles them out. */
#ifdef TINYCL_NO_REGION_MARKS
#define TINYCL_REGION_MARK() ((void)0)
#else
void tinycl_region_mark(void);
#define TINYCL_REGION_MARK() tinycl_region_mark()
#endif

{chr(10).join(writer.declarations)}

#endif /* TINYCL_MODEL_H */
"""


def makefile(target: Target, runtime_sources: list[str]) -> str:
    sources = ["tinycl_model.c", "tinycl_model_data.c", *runtime_sources, *(f"harness/{f}" for f in target.harness)]
    linker_scripts = [flag for flag in target.ldflags if flag.endswith(".ld")]
    run = " ".join(target.run_argv())
    count = ""
    if target.emulator:
        # the plugin's mark= argument: tinycl_region_mark's address (nm; Thumb bit cleared)
        mark = ("$$(printf '0x%x' $$(( 0x$$($(NM) $(BINARY) | awk '$$3 == \"tinycl_region_mark\" {print $$1}') "
                "& ~1 )))")
        plugin_flags = " ".join(PLUGIN_CFLAGS)
        count = f"""
# instructions executed, in total and between region marks -> {target.counts_file}
NM = {target.tool_prefix()}nm
PLUGIN = {PLUGIN_FILE}

$(PLUGIN): tools/tinycl_insn_count.c
\tmkdir -p $(dir $@)
\t{HOST_CC} {plugin_flags} $< -o $@

count: $(BINARY) $(PLUGIN)
\t{" ".join(target.emulator)} -plugin $(PLUGIN),mark={mark},out={target.counts_file} -kernel $(BINARY)
"""
    return f"""# Generated by tinycl export: the model on {target.description}.
#   make -f Makefile.{target.name}        builds {target.binary}
#   make -f Makefile.{target.name} run    runs it on tinycl_in.bin, writes {target.output_file}
{"#   make -f Makefile." + target.name + " count  the same run, counting instructions (QEMU plugin)" + chr(10)
 if target.emulator else ""}CC = {target.compiler}
CFLAGS = {" ".join(target.cflags)}
CPPFLAGS = -I. -Iruntime -Iharness '-DTINYCL_OUTPUT_PATH="{target.output_file}"'
LDFLAGS = {" ".join(target.ldflags)}
LDLIBS = {" ".join(target.libs)}
SOURCES = {" ".join(sources)}
HEADERS = tinycl_model.h $(wildcard runtime/*.h) harness/tinycl_platform.h {" ".join(linker_scripts)}
BINARY = {target.binary}

$(BINARY): $(SOURCES) $(HEADERS)
\tmkdir -p $(dir $@)
\t$(CC) $(CFLAGS) $(CPPFLAGS) $(SOURCES) $(LDFLAGS) $(LDLIBS) -o $@

run: $(BINARY)
\t{run}
{count}
clean:
\trm -rf build/{target.name}

.PHONY: run clean{" count" if target.emulator else ""}
"""


def generate_project(dep: Deployment) -> ExportedProject:
    """Every generated file and static size of ``dep``'s project, in memory (``root`` None)."""
    dep.validate()
    writer = CWriter()
    frozen_body, frozen_buffers, frozen_regions = frozen_code(dep, writer)
    latent_body, latent_region = latent_code(dep, writer)
    adaptive_body, adaptive_buffers, adaptive_regions = adaptive_code(dep, writer)
    replay_rows = 0 if dep.replay_rows is None else len(dep.replay_rows)
    if replay_rows:
        writer.array("uint8_t", "tinycl_replay_rows", dep.replay_rows,
                     f"replay memory: {replay_rows} packed latents of {dep.row_bytes} bytes")
        writer.array("uint8_t" if dep.num_classes <= 256 else "int32_t", "tinycl_replay_labels", dep.replay_labels)
    buffers = {"tinycl_input_s8": int(np.prod(dep.input_shape)), **frozen_buffers.sizes(), **adaptive_buffers.sizes()}
    statics = [f"static int8_t tinycl_input_s8[{int(np.prod(dep.input_shape))}];",
               *frozen_buffers.definitions(), *adaptive_buffers.definitions()]
    runtime_sources = [f"runtime/{p.name}" for p in runtime_files() if p.suffix == ".c"]
    files = {
        "tinycl_model.h": model_header(dep, writer, buffers),
        "tinycl_model_data.c": "/* Generated by tinycl export: the model's constants. Do not edit. */\n"
                               "#include \"tinycl_model.h\"\n\n" + "\n".join(writer.definitions),
        "tinycl_model.c": f"""/* Generated by tinycl export: the model as kernel calls. Do not edit. */
#include "tinycl_model.h"
#include "tinycl_runtime.h"

{chr(10).join(statics)}

void tinycl_frozen_forward(const uint8_t *rgb_hwc, uint8_t *lr_u8)
{{
{chr(10).join(frozen_body)}
}}

void tinycl_latent_encode(const uint8_t *lr_u8, uint8_t *codes)
{{
{chr(10).join(latent_body)}
}}

void tinycl_adaptive_forward(const uint8_t *codes, float *logits)
{{
{chr(10).join(adaptive_body)}
}}
""",
        **{f"Makefile.{t.name}": makefile(t, runtime_sources) for t in TARGETS.values()},
    }
    harness = {"frame": int(np.prod(dep.input_shape)), "lr_u8": dep.latent_values, "lr_codes": dep.latent_values,
               "lr_packed": dep.row_bytes, "logits": 4 * dep.num_classes}
    # one frame, mark after mark (runtime/harness/main.c): the frozen stage, the latent
    # quantizer, packing, the adaptive stage, then the harness's own work
    pack = Region("pack_bits", "pack_bits", "latent", None, 0, dep.row_bytes)
    frame_regions = [*frozen_regions, latent_region, pack, *adaptive_regions, OUTPUT_REGION]
    unpack = Region("unpack_bits", "unpack_bits", "latent", None, 0, dep.latent_values)
    replay_regions = [unpack, *adaptive_regions, OUTPUT_REGION] if replay_rows else []
    return ExportedProject(None, {**buffers, **harness}, dict(writer.constants), frame_regions, replay_regions, files)


def runtime_files() -> list[Path]:
    return sorted(p for p in RUNTIME_DIR.iterdir() if p.suffix in (".c", ".h"))

def write_project_files(root: Path, files: dict[str, str], harness: tuple[str, ...] | list[str]) -> None:
    """A C project folder: the runtime, the ``harness`` files, the QEMU tools and the generated
    ``files`` (name -> text) in ``root`` (created; files of the same name are replaced). The one
    writer of both the inference and the training project."""
    if root.exists() and not root.is_dir():
        raise TinyclError(f"export folder {root} exists and is not a folder")
    try:
        for folder in ("runtime", "harness", "tools"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for path in runtime_files():
            shutil.copyfile(path, root / "runtime" / path.name)
        for name in harness:
            shutil.copyfile(RUNTIME_DIR / "harness" / name, root / "harness" / name)
        for name in TOOL_FILES:
            shutil.copyfile(RUNTIME_DIR / "tools" / name, root / "tools" / name)
        for name, text in files.items():
            (root / name).write_text(text)
    except OSError as exc:
        raise TinyclError(f"cannot write the export folder {root}: {exc.strerror or exc}") from None


def write_project(dep: Deployment, out_dir: Path, project: ExportedProject | None = None) -> ExportedProject:
    """Write the C project for ``dep`` into ``out_dir`` (created; files of the same name are
    replaced, others left alone). ``project``: ``generate_project(dep)`` when already computed."""
    project = project or generate_project(dep)
    root = Path(out_dir)
    write_project_files(root, project.files, HARNESS_FILES)
    return replace(project, root=root)
