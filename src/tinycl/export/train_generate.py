"""The ``--train`` C project: the whole continual-learning loop on the device.

On top of the inference project's frozen stage and latent quantizer (``generate.frozen_code`` /
``latent_code``), the generator writes the trainable adaptive stage as straight-line kernel
calls (``tinycl_train.c``), its initial parameters as RAM-initialized arrays
(``tinycl_train_data.c``), and the loop's settings as macros (``tinycl_train.h``) for the
generic loop ``harness/train_main.c``. Every buffer is static and sized here.

One training step (``tinycl_train_step``) on a mini-batch of Q-bit codes, layer by layer over
the whole batch (batch renormalization needs every sample's statistics before any sample can
go on), PULP-TrainLib's triple per layer:

- forward: per conv / linear, the chosen input channels are copied aside for the weight gradient
  (``keep_channels_fp32``; the first layer's input is the batch's codes, decoded again when
  needed, so it keeps nothing); the conv output is kept for batch renorm's backward; each ReLU
  keeps a 1-bit mask. Random channel choices are drawn here, layer by layer, from the sparse
  PCG32 stream, as ``ChannelSelector.next`` draws them in Python.
- loss: ``cross_entropy_fp32``.
- backward, last op first: weight gradients (accumulated sample by sample, bias and BN gamma /
  beta), input gradients (down to the earliest trained op only), ReLU masks, pool.
- update: ``sgd_fp32`` per tensor, ``sgd_fp32_channels`` on the chosen channels of sparse ones.

Two transient batch buffers (``tinycl_act0``/``1``) carry activations forward and gradients
backward; what backward needs is kept in per-layer buffers whose bytes ``kept_bytes`` reports.
Region marks separate the regions, each one a layer's phase (forward, weight_grad,
input_grad, update; plus loss and the loop's own), so the QEMU plugin's counts split by layer
and phase (``tinycl.export.train_measure``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tinycl.errors import TinyclError
from tinycl.export.deployment import Deployment
from tinycl.export.generate import CWriter, frozen_code, latent_code, model_header, runtime_files
from tinycl.export.reference import latent_groups
from tinycl.export.toolchains import HOST_CC, PLUGIN_CFLAGS, PLUGIN_FILE, TARGETS, Target
from tinycl.export.train_lower import (
    TrainableStage,
    TrainAct,
    TrainConv,
    TrainFlatten,
    TrainLinear,
    TrainNorm,
    TrainOp,
    TrainPool,
)

MARK = "    TINYCL_REGION_MARK();"
FW_KERNELS = {"conv": "conv2d_fp32_fw", "dw": "depthwise_fp32_fw", "pw": "pointwise_fp32_fw"}
WG_KERNELS = {"conv": "conv2d_fp32_wg", "dw": "depthwise_fp32_wg", "pw": "pointwise_fp32_wg"}
IG_KERNELS = {"conv": "conv2d_fp32_ig", "dw": "depthwise_fp32_ig", "pw": "pointwise_fp32_ig"}
POLICIES = {"recipe": "TINYCL_POLICY_RECIPE", "ar1": "TINYCL_POLICY_AR1", "reservoir": "TINYCL_POLICY_RESERVOIR",
            "class-balanced": "TINYCL_POLICY_CLASS_BALANCED"}
TRAIN_HARNESS = ("train_main.c", "stack_paint.c")
BRN_STRUCT_BYTES = 96  # sizeof(tinycl_brn) with 4-byte pointers and 8-byte aligned doubles (ARM EABI, ilp32f)
PARAM_EXPERIENCES = 3  # issue 17: adaptive weights compared after the first 3 experiences


@dataclass(frozen=True)
class LoopSettings:
    """The learner's settings (``tinycl.train.learner.Learner``) and what the program replays."""

    experiences: int  # CL batches the program learns, from batch 0
    max_new: int  # the largest of those batches
    minibatch: int
    epochs: int
    capacity: int
    policy: str
    shuffle: str
    replay_order: str
    pad_first_batch: bool
    reset_sgd: bool
    brn_inc_momentum: float | None
    cwr: bool
    lr: float
    inc_lr: float
    momentum: float
    weight_decay: float
    seed: int
    trace_experiences: int  # experiences whose codes and memory are written in full
    test_images: int  # test frames predicted after the last experience

    @property
    def max_rows(self) -> int:
        """Rows of the largest experience after ar1-pytorch's padding of batch 0."""
        return self.max_new + (self.minibatch - 1 if self.pad_first_batch else 0)


@dataclass(frozen=True)
class TrainRegion:
    """The code between two region marks of the training program. ``phase``: forward |
    weight_grad | input_grad | update | loss (a step's regions), or loop (the harness's).
    ``macs``: multiply-accumulates for one sample (scaled by the step's batch when counted)."""

    name: str
    kernel: str
    phase: str
    layer: int | None = None
    macs: int = 0


@dataclass(frozen=True)
class ParamSpec:
    """One array the program writes after an experience, and the learner's state-dict key it
    is compared with."""

    symbol: str
    key: str
    count: int
    dtype: str = "float32"  # float32, or float64 for the ramped r_max / d_max


@dataclass
class TrainProject:
    """What ``generate_train_project`` computed: files, static bytes, regions, parameters."""

    files: dict[str, str]
    buffers: dict[str, int]  # RAM: zero-initialized buffers and RAM-initialized parameters
    external: dict[str, int]  # external RAM on the MCU targets (TINYCL_EXT_RAM; plain RAM on the host)
    constants: dict[str, int]  # flash: the frozen stage, tables, initial parameter values
    frame_regions: list[TrainRegion]
    step_regions: list[TrainRegion]
    test_regions: list[TrainRegion]
    params: list[ParamSpec]
    kept: list[dict]  # per layer: bytes kept for backward (inputs, BN inputs, masks)
    stage: TrainableStage
    settings: LoopSettings
    random_layers: list[int] = field(default_factory=list)  # model layer of each random selection

    @property
    def experience_setup(self) -> TrainRegion:
        return TrainRegion("experience_setup", "", "loop")

    @property
    def memory_update(self) -> TrainRegion:
        return TrainRegion("memory_update", "replay_update", "loop")


def hex_double(value: float) -> str:
    """An exact C double literal (hexadecimal)."""
    if not np.isfinite(value):
        raise TinyclError(f"cannot export a non-finite setting ({value})")
    return float(value).hex()


def float_items(values: np.ndarray) -> str:
    from tinycl.export.generate import float_literal

    items = [float_literal(v) for v in np.asarray(values, np.float32).ravel().tolist()]
    return ",\n    ".join(", ".join(items[i : i + 16]) for i in range(0, len(items), 16))


class Emitter:
    """Collects the training program's definitions, sizes and regions."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.data: list[str] = []  # tinycl_train_data.c: RAM-initialized parameters
        self.statics: list[str] = []  # tinycl_train.c: zeroed buffers and per-layer constants
        self.declarations: list[str] = []
        self.buffers: dict[str, int] = {}
        self.external: dict[str, int] = {}  # buffers in external RAM on the MCU targets (TINYCL_EXT_RAM)
        self.constants: dict[str, int] = {}
        self.grads: list[tuple[str, int]] = []
        self.momenta: list[tuple[str, int]] = []
        self.params: list[ParamSpec] = []

    def parameter(self, name: str, values: np.ndarray, key: str, trainable: bool = True) -> str:
        flat = np.asarray(values, np.float32).ravel()
        self.data.append(f"float {name}[{flat.size}] = {{\n    {float_items(flat)}\n}};\n")
        self.declarations.append(f"extern float {name}[{flat.size}];")
        self.buffers[name] = 4 * flat.size
        self.constants[f"{name} (initial values)"] = 4 * flat.size  # the .data image in flash
        self.params.append(ParamSpec(name, key, flat.size))
        if trainable:
            for suffix, where in (("_grad", self.grads), ("_momentum", self.momenta)):
                self.zeros(f"{name}{suffix}", "float", flat.size, external=True)
                where.append((f"{name}{suffix}", flat.size))
        return name

    def zeros(self, name: str, ctype: str, count: int, external: bool = False) -> str:
        """A zero-initialized static buffer; ``external``: one that grows with the mini-batch or
        the model's size, placed in external RAM on the MCU targets."""
        count = max(int(count), 1)
        self.statics.append(f"static {ctype} {name}[{count}]{' TINYCL_EXT_RAM' if external else ''};")
        (self.external if external else self.buffers)[name] = count * {"float": 4, "int32_t": 4, "uint8_t": 1}[ctype]
        return name

    def shape(self, name: str, in_shape, out_shape, kernel: tuple[int, int], stride: int, padding: int) -> str:
        fields = [*in_shape, *out_shape, *kernel, stride, padding]
        self.statics.append(f"static const tinycl_conv_shape {name} = {{{', '.join(str(int(v)) for v in fields)}}};")
        self.constants[name] = 40
        return name


def _values(shape) -> int:
    return int(np.prod(shape))


def generate_train_code(stage: TrainableStage, dep: Deployment, settings: LoopSettings, emit: Emitter
                        ) -> tuple[list[str], list[str], list[TrainRegion], list[dict], list[int]]:
    """(step body, predict body, step regions, kept bytes per layer, layers of random choices)."""
    ops = stage.ops
    batch = settings.minibatch
    d_values = dep.latent_values
    groups = latent_groups(dep.quantizer, dep.latent_shape[0])
    emit.zeros("tinycl_latent", "float", d_values)
    act_values = max([_values(dep.latent_shape)] + [_out_values(op, stage, i) for i, op in enumerate(ops)])
    emit.zeros("tinycl_act0", "float", batch * act_values, external=True)
    emit.zeros("tinycl_act1", "float", batch * act_values, external=True)
    classes = stage.num_classes
    emit.zeros("tinycl_logits", "float", batch * classes, external=True)
    emit.zeros("tinycl_grad_logits", "float", batch * classes, external=True)
    if stage.random_layers:  # pcg32_choice's working array: the largest channel count drawn from
        emit.zeros("tinycl_choice_scratch", "int32_t", max(ops[j].selection.num_channels for j in stage.random_layers))

    names: dict[int, dict[str, str]] = {}
    kept: list[dict] = []
    random_layers: list[int] = []
    # parameters, in the module's parameter order (conv weight, bias; BN weight, bias; ...)
    for j, op in enumerate(ops):
        n: dict[str, str] = {}
        names[j] = n
        if isinstance(op, (TrainConv, TrainLinear)):
            n["weight"] = emit.parameter(f"tinycl_t{j}_weight", op.weight, f"{op.key}.weight", op.selection.weight_grad)
            if op.bias is not None:
                n["bias"] = emit.parameter(f"tinycl_t{j}_bias", op.bias, f"{op.key}.bias")
            sel = op.selection
            if sel.policy == "random":
                n["chosen"] = emit.zeros(f"tinycl_t{j}_chosen", "int32_t", sel.count)
                random_layers.append(op.layer)
            elif sel.policy == "fixed":
                emit.statics.append(f"static const int32_t tinycl_t{j}_chosen[{sel.count}] = "
                                    f"{{{', '.join(map(str, sel.channels))}}};")
                emit.constants[f"tinycl_t{j}_chosen"] = 4 * sel.count
                n["chosen"] = f"tinycl_t{j}_chosen"
            if isinstance(op, TrainConv):
                n["shape"] = emit.shape(f"tinycl_t{j}_shape", op.in_shape, op.out_shape, op.weight.shape[2:],
                                        op.stride, op.padding)
            spatial = _values(op.in_shape[1:]) if isinstance(op, TrainConv) else 1
            first = j == 0
            keep = sel.count * spatial if sel.weight_grad and not first else 0
            if keep:
                n["kept"] = emit.zeros(f"tinycl_t{j}_kept", "float", batch * keep, external=True)
            if first and sel.weight_grad and sel.policy != "dense":
                n["kept_first"] = emit.zeros(f"tinycl_t{j}_kept", "float", keep or sel.count * spatial)
            kept.append({"layer": op.layer, "op": j, "what": f"{op.kind if isinstance(op, TrainConv) else 'linear'} "
                         "input, chosen channels", "channels": sel.count, "of_channels": sel.num_channels,
                         "bytes": 4 * batch * keep, "buffer": n.get("kept"),
                         "note": "the LR layer's Q-bit codes, decoded again when needed" if first else ""})
        elif isinstance(op, TrainNorm):
            n["gamma"] = emit.parameter(f"tinycl_t{j}_gamma", op.gamma, f"{op.key}.weight")
            n["beta"] = emit.parameter(f"tinycl_t{j}_beta", op.beta, f"{op.key}.bias")
            running_key = "running_std" if op.stats == "std" else "running_var"
            n["mean"] = emit.parameter(f"tinycl_t{j}_running_mean", op.running_mean, f"{op.key}.running_mean", False)
            n["var"] = emit.parameter(f"tinycl_t{j}_running_var", op.running_var, f"{op.key}.{running_key}", False)
            for stat in ("batch_mean", "batch_std", "r", "d"):
                emit.zeros(f"tinycl_t{j}_{stat}", "float", op.shape[0])
            emit.statics.append(
                f"static tinycl_brn tinycl_t{j}_bn = {{{op.shape[0]}, {int(op.stats == 'std')}, "
                f"{float_literal_of(op.eps)}, {hex_double(op.momentum)}, {hex_double(op.r_max)}, "
                f"{hex_double(op.d_max)}, {hex_double(op.max_r_max)}, {hex_double(op.max_d_max)}, "
                f"{hex_double(op.ramp_per_sample)}, tinycl_t{j}_gamma, tinycl_t{j}_beta, tinycl_t{j}_running_mean, "
                f"tinycl_t{j}_running_var, tinycl_t{j}_batch_mean, tinycl_t{j}_batch_std, tinycl_t{j}_r, "
                f"tinycl_t{j}_d}};")
            # tinycl_brn on the 32-bit MCUs: 3 words, padding to 8, 6 doubles, 8 pointers
            emit.buffers[f"tinycl_t{j}_bn"] = BRN_STRUCT_BYTES
            n["bn"] = f"tinycl_t{j}_bn"
            n["input"] = emit.zeros(f"tinycl_t{j}_input", "float", batch * _values(op.shape), external=True)
            kept.append({"layer": op.layer, "op": j, "what": "batch renorm input (the conv output)",
                         "channels": op.shape[0], "of_channels": op.shape[0], "bytes": 4 * batch * _values(op.shape),
                         "buffer": n["input"], "note": ""})
        elif isinstance(op, TrainAct):
            mask_bytes = (batch * _values(op.shape) + 7) // 8
            n["mask"] = emit.zeros(f"tinycl_t{j}_mask", "uint8_t", mask_bytes, external=True)
            kept.append({"layer": op.layer, "op": j, "what": f"{op.kind} mask, 1 bit per value", "channels": 0,
                         "of_channels": 0, "bytes": mask_bytes, "buffer": n["mask"], "note": ""})
        elif isinstance(op, TrainPool):
            kh, kw, stride = op.window
            n["shape"] = emit.shape(f"tinycl_t{j}_shape", op.in_shape, op.out_shape, (kh, kw), stride, 0)

    step: list[str] = []
    regions: list[TrainRegion] = []

    def region(r: TrainRegion, lines: list[str]) -> None:
        regions.append(r)
        step.append(MARK + f" /* {r.name} */")
        step.extend(lines)

    def per_sample(*calls: str) -> list[str]:
        return ["    for (b = 0; b < batch; ++b) {", *(f"        {c}" for c in calls), "    }"]

    # ---- zero the gradients
    region(TrainRegion("zero_grad", "", "update"),
           [f"    tinycl_zero({g}, {count});" for g, count in emit.grads] or ["    /* nothing trains */"])

    # ---- forward
    cur, cur_values = "codes", d_values
    for j, op in enumerate(ops):
        n = names[j]
        nxt = ops[j + 1] if j + 1 < len(ops) else None
        other = "tinycl_act1" if cur == "tinycl_act0" else "tinycl_act0"
        if isinstance(op, TrainConv):
            sel = op.selection
            target = names[j + 1]["input"] if isinstance(nxt, TrainNorm) else other
            out_values = _values(op.out_shape)
            lines = _draw(sel, n)
            chosen = n.get("chosen", "0")
            calls = []
            if cur == "codes":
                calls.append(f"latent_decode_fp32(codes + b * {d_values}, {groups}, {d_values // groups}, "
                             f"tinycl_latent_step, TINYCL_LATENT_OFFSET, tinycl_latent);")
                source = "tinycl_latent"
            else:
                source = f"{cur} + b * {cur_values}"
                if "kept" in n:
                    calls.append(f"keep_channels_fp32({source}, {_values(op.in_shape[1:])}, {chosen}, {sel.count}, "
                                 f"{n['kept']} + b * {sel.count * _values(op.in_shape[1:])});")
            calls.append(f"{FW_KERNELS[op.kind]}({source}, &{n['shape']}, {n['weight']}, {n.get('bias', '0')}, "
                         f"{target} + b * {out_values});")
            region(TrainRegion(f"layer{op.layer}_forward", FW_KERNELS[op.kind], "forward", op.layer, op.macs),
                   lines + per_sample(*calls))
            cur, cur_values = target, out_values
        elif isinstance(op, TrainNorm):
            spatial = _values(op.shape[1:])
            if cur != n["input"]:
                region(TrainRegion(f"layer{op.layer}_norm_keep", "keep_channels_fp32", "forward", op.layer),
                       per_sample(f"keep_channels_fp32({cur} + b * {cur_values}, {cur_values}, 0, 1, "
                                  f"{n['input']} + b * {cur_values});"))
            target = "tinycl_act0" if cur != "tinycl_act0" else "tinycl_act1"
            region(TrainRegion(f"layer{op.layer}_norm_forward", "batch_renorm_fp32_fw_train", "forward", op.layer),
                   [f"    batch_renorm_fp32_fw_train({n['input']}, batch, {spatial}, &{n['bn']}, {target});"])
            cur, cur_values = target, _values(op.shape)
        elif isinstance(op, TrainAct):
            kernel = f"{op.kind}_fp32_fw_train"
            region(TrainRegion(f"layer{op.layer}_{op.kind}_forward", kernel, "forward", op.layer),
                   [f"    {kernel}({cur}, batch * {cur_values}, {cur}, {n['mask']});"])
        elif isinstance(op, TrainPool):
            out_values = _values(op.out_shape)
            region(TrainRegion(f"layer{op.layer}_forward", "avgpool_fp32_fw", "forward", op.layer,
                               out_values * op.window[0] * op.window[1]),
                   per_sample(f"avgpool_fp32_fw({cur} + b * {cur_values}, &{n['shape']}, {other} + b * {out_values});"))
            cur, cur_values = other, out_values
        elif isinstance(op, TrainLinear):
            sel = op.selection
            out_f, in_f = op.weight.shape
            target = "tinycl_logits" if j == len(ops) - 1 else other
            calls = []
            if "kept" in n:
                calls.append(f"keep_channels_fp32({cur} + b * {in_f}, 1, {n.get('chosen', '0')}, {sel.count}, "
                             f"{n['kept']} + b * {sel.count});")
            calls.append(f"linear_fp32_fw({cur} + b * {in_f}, {in_f}, {n['weight']}, {n.get('bias', '0')}, {out_f}, "
                         f"{target} + b * {out_f});")
            region(TrainRegion(f"layer{op.layer}_forward", "linear_fp32_fw", "forward", op.layer, op.macs),
                   _draw(sel, n) + per_sample(*calls))
            cur, cur_values = target, out_f
        elif isinstance(op, TrainFlatten):
            continue
    if cur != "tinycl_logits":
        raise TinyclError("the adaptive stage's last op must be its linear head")

    region(TrainRegion("loss", "cross_entropy_fp32", "loss"),
           [f"    loss = cross_entropy_fp32(tinycl_logits, labels, batch, {classes}, tinycl_grad_logits);"])

    # ---- backward
    g, g_values = "tinycl_grad_logits", classes
    for j in range(len(ops) - 1, -1, -1):
        op, n = ops[j], names[j]
        needs = stage.needs_input_grad(j)
        other = "tinycl_act1" if g == "tinycl_act0" else "tinycl_act0"
        if isinstance(op, TrainLinear):
            sel = op.selection
            out_f, in_f = op.weight.shape
            calls = []
            if sel.weight_grad:
                calls.append(f"linear_fp32_wg({n['kept']} + b * {sel.count}, {in_f}, {g} + b * {out_f}, {out_f}, "
                             f"{n.get('chosen', '0')}, {sel.count}, {n['weight']}_grad);")
            if "bias" in n:
                calls.append(f"bias_fp32_wg({g} + b * {out_f}, {out_f}, 1, {n['bias']}_grad);")
            if calls:
                region(TrainRegion(f"layer{op.layer}_weight_grad", "linear_fp32_wg", "weight_grad", op.layer,
                                   out_f * sel.count), per_sample(*calls))
            if not needs:
                break
            region(TrainRegion(f"layer{op.layer}_input_grad", "linear_fp32_ig", "input_grad", op.layer, op.macs),
                   per_sample(f"linear_fp32_ig({g} + b * {out_f}, {out_f}, {n['weight']}, {in_f}, "
                              f"{other} + b * {in_f});"))
            g, g_values = other, in_f
        elif isinstance(op, TrainPool):
            if not needs:
                break
            in_values = _values(op.in_shape)
            region(TrainRegion(f"layer{op.layer}_input_grad", "avgpool_fp32_bw", "input_grad", op.layer,
                               _values(op.out_shape) * op.window[0] * op.window[1]),
                   per_sample(f"avgpool_fp32_bw({g} + b * {g_values}, &{n['shape']}, {other} + b * {in_values});"))
            g, g_values = other, in_values
        elif isinstance(op, TrainAct):
            if not needs:
                break
            region(TrainRegion(f"layer{op.layer}_{op.kind}_input_grad", "relu_fp32_bw", "input_grad", op.layer),
                   [f"    relu_fp32_bw({g}, {n['mask']}, batch * {g_values}, {g});"])
        elif isinstance(op, TrainNorm):
            spatial = _values(op.shape[1:])
            region(TrainRegion(f"layer{op.layer}_norm_weight_grad", "batch_renorm_fp32_wg", "weight_grad", op.layer),
                   [f"    batch_renorm_fp32_wg({g}, {n['input']}, batch, {spatial}, &{n['bn']}, {n['gamma']}_grad, "
                    f"{n['beta']}_grad);"])
            if not needs:
                break
            region(TrainRegion(f"layer{op.layer}_norm_input_grad", "batch_renorm_fp32_ig", "input_grad", op.layer),
                   [f"    batch_renorm_fp32_ig({g}, {n['input']}, batch, {spatial}, &{n['bn']}, {g});"])
        elif isinstance(op, TrainConv):
            sel = op.selection
            out_values, in_values = _values(op.out_shape), _values(op.in_shape)
            spatial = _values(op.in_shape[1:])
            calls = []
            if sel.weight_grad:
                if j == 0:
                    calls.append(f"latent_decode_fp32(codes + b * {d_values}, {groups}, {d_values // groups}, "
                                 f"tinycl_latent_step, TINYCL_LATENT_OFFSET, tinycl_latent);")
                    kept_source = "tinycl_latent"
                    if "kept_first" in n:
                        calls.append(f"keep_channels_fp32(tinycl_latent, {spatial}, {n['chosen']}, {sel.count}, "
                                     f"{n['kept_first']});")
                        kept_source = n["kept_first"]
                else:
                    kept_source = f"{n['kept']} + b * {sel.count * spatial}"
                calls.append(f"{WG_KERNELS[op.kind]}({kept_source}, &{n['shape']}, {g} + b * {out_values}, "
                             f"{n.get('chosen', '0')}, {sel.count}, {n['weight']}_grad);")
            if "bias" in n:
                calls.append(f"bias_fp32_wg({g} + b * {out_values}, {op.out_shape[0]}, {_values(op.out_shape[1:])}, "
                             f"{n['bias']}_grad);")
            if calls:
                region(TrainRegion(f"layer{op.layer}_weight_grad", WG_KERNELS[op.kind], "weight_grad", op.layer,
                                   op.macs * sel.count // sel.num_channels), per_sample(*calls))
            if not needs:
                break
            region(TrainRegion(f"layer{op.layer}_input_grad", IG_KERNELS[op.kind], "input_grad", op.layer, op.macs),
                   per_sample(f"{IG_KERNELS[op.kind]}({g} + b * {out_values}, &{n['shape']}, {n['weight']}, "
                              f"{other} + b * {in_values});"))
            g, g_values = other, in_values

    # ---- update: torch's SGD per tensor; channel-sparse weights on their chosen channels
    for j, op in enumerate(ops):
        n = names[j]
        lines = []
        if isinstance(op, (TrainConv, TrainLinear)):
            sel = op.selection
            if sel.weight_grad:
                if sel.policy == "dense":
                    lines.append(_sgd(n["weight"], op.weight.size))
                else:
                    outer = 1 if isinstance(op, TrainConv) and op.kind == "dw" else op.weight.shape[0]
                    inner = int(np.prod(op.weight.shape[2:])) if isinstance(op, TrainConv) else 1
                    lines.append(f"    sgd_fp32_channels({n['weight']}, {n['weight']}_grad, {n['weight']}_momentum, "
                                 f"{outer}, {sel.num_channels}, {inner}, {n['chosen']}, {sel.count}, lr, "
                                 "TINYCL_TRAIN_MOMENTUM, TINYCL_TRAIN_WEIGHT_DECAY);")
            if "bias" in n:
                lines.append(_sgd(n["bias"], op.weight.shape[0]))
            kernel = "sgd_fp32" if sel.policy == "dense" or not sel.weight_grad else "sgd_fp32_channels"
            if lines:
                region(TrainRegion(f"layer{op.layer}_update", kernel, "update", op.layer), lines)
        elif isinstance(op, TrainNorm):
            region(TrainRegion(f"layer{op.layer}_norm_update", "sgd_fp32", "update", op.layer),
                   [_sgd(n["gamma"], op.shape[0]), _sgd(n["beta"], op.shape[0])])

    predict = _predict_body(stage, names, dep, groups)
    return step, predict, regions, kept, random_layers


def float_literal_of(value: float) -> str:
    from tinycl.export.generate import float_literal

    return float_literal(float(np.float32(value)))


def _draw(sel, n: dict[str, str]) -> list[str]:
    """The per-step random choice: k of C from the sparse stream, sorted (ChannelSelector.next)."""
    if sel.policy != "random":
        return []
    return [f"    pcg32_choice(sparse_rng, {sel.num_channels}, {sel.count}, tinycl_choice_scratch, {n['chosen']});",
            f"    sort_int32({n['chosen']}, {sel.count});"]


def _sgd(name: str, count: int) -> str:
    return (f"    sgd_fp32({name}, {name}_grad, {name}_momentum, {count}, lr, TINYCL_TRAIN_MOMENTUM, "
            "TINYCL_TRAIN_WEIGHT_DECAY);")


def _out_values(op: TrainOp, stage: TrainableStage, index: int) -> int:
    if isinstance(op, TrainConv):
        return max(_values(op.out_shape), _values(op.in_shape))
    if isinstance(op, TrainNorm):
        return _values(op.shape)
    if isinstance(op, TrainPool):
        return max(_values(op.in_shape), _values(op.out_shape))
    if isinstance(op, TrainLinear):
        return max(op.weight.shape)
    return 0


def _predict_body(stage: TrainableStage, names: dict[int, dict[str, str]], dep: Deployment, groups: int
                  ) -> list[str]:
    """One sample in eval mode: BN from the running statistics (BatchRenorm2d.forward in eval)."""
    d_values = dep.latent_values
    lines = [f"    latent_decode_fp32(codes, {groups}, {d_values // groups}, tinycl_latent_step, TINYCL_LATENT_OFFSET, "
             f"tinycl_latent);"]
    cur = "tinycl_latent"
    for j, op in enumerate(stage.ops):
        n = names[j]
        other = "tinycl_act1" if cur == "tinycl_act0" else "tinycl_act0"
        if isinstance(op, TrainConv):
            lines.append(f"    {FW_KERNELS[op.kind]}({cur}, &{n['shape']}, {n['weight']}, {n.get('bias', '0')}, "
                         f"{other});")
            cur = other
        elif isinstance(op, TrainNorm):
            lines.append(f"    batch_renorm_fp32_fw_eval({cur}, {_values(op.shape[1:])}, &{n['bn']}, {cur});")
        elif isinstance(op, TrainAct):
            lines.append(f"    {op.kind}_fp32_fw({cur}, {_values(op.shape)}, {cur});")
        elif isinstance(op, TrainPool):
            lines.append(f"    avgpool_fp32_fw({cur}, &{n['shape']}, {other});")
            cur = other
        elif isinstance(op, TrainLinear):
            out_f, in_f = op.weight.shape
            target = "logits" if j == len(stage.ops) - 1 else other
            lines.append(f"    linear_fp32_fw({cur}, {in_f}, {n['weight']}, {n.get('bias', '0')}, {out_f}, {target});")
            cur = target
    return lines


def train_header(stage: TrainableStage, settings: LoopSettings, emit: Emitter) -> str:
    s = settings
    head = stage.ops[stage.head_index]
    assert isinstance(head, TrainLinear)
    classes, features = head.weight.shape
    inc = s.brn_inc_momentum
    return f"""/* Generated by tinycl export --train: the continual-learning loop's settings. Do not edit. */
#ifndef TINYCL_TRAIN_H
#define TINYCL_TRAIN_H

#include <stdint.h>

#include "tinycl_runtime.h"

/* What grows with the mini-batch, the model or the replay memory (activations kept for
 * backward, gradients, momenta, the memory's rows) lives in external RAM on the MCU targets:
 * the linker scripts' EXTRAM region, section .tinycl_ext (AN386's 16 MB PSRAM on the M4F). */
#if defined(__arm__) || defined(__riscv)
#define TINYCL_EXT_RAM __attribute__((section(".tinycl_ext")))
#else
#define TINYCL_EXT_RAM
#endif

/* what the program learns: CL batches 0 .. EXPERIENCES - 1, read one at a time */
#define TINYCL_TRAIN_EXPERIENCES {s.experiences}
#define TINYCL_TRAIN_MAX_NEW {s.max_new}
#define TINYCL_TRAIN_MAX_ROWS {s.max_rows}
#define TINYCL_TRAIN_TRACE_EXPERIENCES {s.trace_experiences}
#define TINYCL_TRAIN_PARAM_EXPERIENCES {PARAM_EXPERIENCES}
#define TINYCL_TRAIN_TEST_IMAGES {s.test_images}
/* the learner (tinycl.train.learner.Learner) and its recipe */
#define TINYCL_TRAIN_MINIBATCH {s.minibatch}
#define TINYCL_TRAIN_EPOCHS {s.epochs}
#define TINYCL_TRAIN_CAPACITY {s.capacity}
#define TINYCL_TRAIN_POLICY {POLICIES[s.policy]}
#define TINYCL_TRAIN_SHUFFLE_BATCH {int(s.shuffle == "batch")} /* 1: once per batch (ar1), 0: every epoch */
#define TINYCL_TRAIN_REPLAY_MEMORY_ORDER {int(s.replay_order == "memory")} /* 1: slots in order (ar1) */
#define TINYCL_TRAIN_PAD_FIRST_BATCH {int(s.pad_first_batch)}
#define TINYCL_TRAIN_RESET_SGD {int(s.reset_sgd)}
#define TINYCL_TRAIN_BRN_PHASE {int(inc is not None)}
#define TINYCL_TRAIN_BRN_INC_MOMENTUM {hex_double(inc if inc is not None else 0.0)} /* {inc} */
#define TINYCL_TRAIN_CWR {int(s.cwr)}
#define TINYCL_TRAIN_LR {hex_double(s.lr)} /* {s.lr} (batch 0) */
#define TINYCL_TRAIN_INC_LR {hex_double(s.inc_lr)} /* {s.inc_lr} (batches >= 1) */
#define TINYCL_TRAIN_MOMENTUM {float_literal_of(s.momentum)} /* {s.momentum} */
#define TINYCL_TRAIN_WEIGHT_DECAY {float_literal_of(s.weight_decay)} /* {s.weight_decay} */
#define TINYCL_TRAIN_SEED {int(s.seed)}ULL /* PCG32 seed: tinycl.prng LOOP_STREAM 1, SPARSE_STREAM 2 */
#define TINYCL_TRAIN_CLASSES {classes}
#define TINYCL_TRAIN_FEATURES {features} /* the head's inputs (CWR*) */
#define TINYCL_TRAIN_RANDOM_LAYERS {len(stage.random_layers)}

/* one step on a mini-batch of Q-bit codes [batch][TINYCL_LR_VALUES]; returns the loss */
float tinycl_train_step(const uint8_t *codes, const uint8_t *labels, int32_t batch, float lr,
                        tinycl_pcg32 *sparse_rng);
/* eval mode (BN from running statistics): one sample's codes -> logits */
void tinycl_train_predict(const uint8_t *codes, float *logits);
void tinycl_train_reset_momentum(void);   /* a new SGD: momentum buffers dropped */
void tinycl_train_set_phase(double momentum); /* batch renorm's incremental phase */
float *tinycl_train_head(void);           /* the head weight [classes][features] (CWR*) */
/* write every parameter and buffer (then r_max / d_max as doubles) / the random channel choices */
int32_t tinycl_train_write_params(int32_t handle);
int32_t tinycl_train_write_channels(int32_t handle);
int32_t tinycl_train_params_bytes(void);
int32_t tinycl_train_channels_bytes(void);

{chr(10).join(emit.declarations)}

#endif /* TINYCL_TRAIN_H */
"""


def train_source(stage: TrainableStage, emit: Emitter, step: list[str], predict: list[str]) -> str:
    norms = [j for j, op in enumerate(stage.ops) if isinstance(op, TrainNorm)]
    floats = [p for p in emit.params]
    head = f"tinycl_t{stage.head_index}_weight"
    writes = [f"    ok = ok && platform_write(handle, {p.symbol}, {4 * p.count}) == {4 * p.count};" for p in floats]
    for j in norms:
        writes.append(f"    ok = ok && platform_write(handle, &tinycl_t{j}_bn.r_max, 8) == 8;")
        writes.append(f"    ok = ok && platform_write(handle, &tinycl_t{j}_bn.d_max, 8) == 8;")
    channel_writes = []
    channel_bytes = 0
    for j in stage.random_layers:
        op = stage.ops[j]
        count = op.selection.count
        channel_writes.append(f"    ok = ok && platform_write(handle, tinycl_t{j}_chosen, {4 * count}) == {4 * count};")
        channel_bytes += 4 * count
    param_bytes = sum(4 * p.count for p in floats) + 16 * len(norms)
    return f"""/* Generated by tinycl export --train: the adaptive stage's training step. Do not edit. */
#include "tinycl_model.h"
#include "tinycl_platform.h"
#include "tinycl_runtime.h"
#include "tinycl_train.h"

{chr(10).join(emit.statics)}

static void tinycl_zero(float *values, int32_t count)
{{
    int32_t i;
    for (i = 0; i < count; ++i) {{
        values[i] = 0.0f;
    }}
}}

float tinycl_train_step(const uint8_t *codes, const uint8_t *labels, int32_t batch, float lr,
                        tinycl_pcg32 *sparse_rng)
{{
    int32_t b;
    float loss;
    (void)sparse_rng;
{chr(10).join(step)}
    return loss;
}}

void tinycl_train_predict(const uint8_t *codes, float *logits)
{{
{chr(10).join(predict)}
}}

void tinycl_train_reset_momentum(void)
{{
{chr(10).join(f"    tinycl_zero({m}, {count});" for m, count in emit.momenta)}
}}

void tinycl_train_set_phase(double momentum)
{{
{chr(10).join(f"    batch_renorm_set_phase(&tinycl_t{j}_bn, momentum);" for j in norms) or "    (void)momentum;"}
}}

float *tinycl_train_head(void)
{{
    return {head};
}}

int32_t tinycl_train_write_params(int32_t handle)
{{
    int32_t ok = 1;
{chr(10).join(writes)}
    return ok;
}}

int32_t tinycl_train_write_channels(int32_t handle)
{{
    int32_t ok = 1;
    (void)handle;
{chr(10).join(channel_writes)}
    return ok;
}}

int32_t tinycl_train_params_bytes(void)
{{
    return {param_bytes};
}}

int32_t tinycl_train_channels_bytes(void)
{{
    return {channel_bytes};
}}
"""


HARNESS_EXTERNAL = ("new_rows", "memory_rows", "batch_codes")  # TINYCL_EXT_RAM in harness/train_main.c


def harness_buffers(dep: Deployment, stage: TrainableStage, s: LoopSettings) -> dict[str, int]:
    """The static buffers of harness/train_main.c, by its symbol names (sized by its macros);
    those of ``HARNESS_EXTERNAL`` are in external RAM on the MCU targets."""
    head = stage.ops[stage.head_index]
    classes, features = head.weight.shape
    scratch = max(s.max_rows, s.capacity, 1)
    sizes = {
        "frame": int(np.prod(dep.input_shape)), "lr_u8": dep.latent_values, "lr_codes": dep.latent_values,
        "new_rows": s.max_new * dep.row_bytes, "new_labels": s.max_new,
        "memory_rows": max(s.capacity, 1) * dep.row_bytes, "memory_labels": max(s.capacity, 1),
        "seen_per_class": 4 * classes, "class_counts": 4 * classes,
        "rows": 4 * s.max_rows, "order": 4 * s.max_rows, "mem_order": 4 * max(s.capacity, 1),
        "scratch": 4 * scratch, "write_slots": 4 * max(s.max_rows, 1), "write_items": 4 * max(s.max_rows, 1),
        "batch_codes": s.minibatch * dep.latent_values, "batch_labels": s.minibatch,
        "step_rows": 4 * s.minibatch, "current": 4 * classes, "counts": 4 * classes,
        "test_logits": 4 * classes,
    }
    if s.cwr:
        sizes.update({"cwr_consolidated": 4 * classes * features, "cwr_has": classes, "cwr_past": 4 * classes})
    return sizes


def makefile_train(target: Target, runtime_sources: list[str]) -> str:
    sources = ["tinycl_model.c", "tinycl_model_data.c", "tinycl_train.c", "tinycl_train_data.c", *runtime_sources,
               *(f"harness/{f}" for f in _harness_sources(target))]
    linker_scripts = [flag for flag in target.ldflags if flag.endswith(".ld")]
    output = f"tinycl_train_out_{target.name}.bin"
    count = ""
    if target.emulator:
        mark = ("$$(printf '0x%x' $$(( 0x$$($(NM) $(BINARY) | awk '$$3 == \"tinycl_region_mark\" {print $$1}') "
                "& ~1 )))")
        count = f"""
# instructions executed, in total and between region marks -> {target.counts_file}
NM = {target.tool_prefix()}nm
PLUGIN = {PLUGIN_FILE}

$(PLUGIN): tools/tinycl_insn_count.c
\tmkdir -p $(dir $@)
\t{HOST_CC} {" ".join(PLUGIN_CFLAGS)} $< -o $@

count: $(BINARY) $(PLUGIN)
\t{" ".join(target.emulator)} -plugin $(PLUGIN),mark={mark},out={target.counts_file} -kernel $(BINARY)
"""
    return f"""# Generated by tinycl export --train: the continual-learning loop on {target.description}.
#   make -f Makefile.{target.name}        builds {target.binary}
#   make -f Makefile.{target.name} run    learns the stream in stream/, writes {output}
CC = {target.compiler}
CFLAGS = {" ".join(target.cflags)}
CPPFLAGS = -I. -Iruntime -Iharness '-DTINYCL_TRAIN_OUTPUT_PATH="{output}"'
LDFLAGS = {" ".join(target.ldflags)}
LDLIBS = {" ".join(target.libs)}
SOURCES = {" ".join(sources)}
HEADERS = tinycl_model.h tinycl_train.h $(wildcard runtime/*.h) harness/tinycl_platform.h {" ".join(linker_scripts)}
BINARY = {target.binary}

$(BINARY): $(SOURCES) $(HEADERS)
\tmkdir -p $(dir $@)
\t$(CC) $(CFLAGS) $(CPPFLAGS) $(SOURCES) $(LDFLAGS) $(LDLIBS) -o $@

run: $(BINARY)
\t{" ".join(target.run_argv())}
{count}
clean:
\trm -rf build/{target.name}

.PHONY: run clean{" count" if target.emulator else ""}
"""


def _harness_sources(target: Target) -> list[str]:
    """The inference harness's platform files with the training main instead of main.c."""
    return [f for f in target.harness if f != "main.c"] + list(TRAIN_HARNESS)


def generate_train_project(dep: Deployment, stage: TrainableStage, settings: LoopSettings) -> TrainProject:
    """Every file and static size of the training program, in memory."""
    dep.validate()
    writer = CWriter()
    frozen_body, frozen_buffers, frozen_regions = frozen_code(dep, writer)
    latent_body, latent_region = latent_code(dep, writer)
    emit = Emitter(settings.minibatch)
    step, predict, step_regions, kept, random_layers = generate_train_code(stage, dep, settings, emit)
    buffers = {"tinycl_input_s8": int(np.prod(dep.input_shape)), **frozen_buffers.sizes()}
    statics = [f"static int8_t tinycl_input_s8[{int(np.prod(dep.input_shape))}];", *frozen_buffers.definitions()]
    runtime_sources = [f"runtime/{p.name}" for p in runtime_files() if p.suffix == ".c"]
    no_adaptive = type(dep)(dep.stage, dep.quantizer, dep.adaptive, dep.input_shape, dep.num_classes, None, None,
                            dep.meta)
    files = {
        "tinycl_model.h": model_header(no_adaptive, writer, buffers),
        "tinycl_model_data.c": "/* Generated by tinycl export --train: the frozen stage's constants. Do not edit. */\n"
                               "#include \"tinycl_model.h\"\n\n" + "\n".join(writer.definitions),
        "tinycl_model.c": f"""/* Generated by tinycl export --train: the frozen stage as kernel calls. Do not edit. */
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
""",
        "tinycl_train.h": train_header(stage, settings, emit),
        "tinycl_train.c": train_source(stage, emit, step, predict),
        "tinycl_train_data.c": "/* Generated by tinycl export --train: the adaptive stage's initial parameters "
                               "(RAM, initialized from flash). Do not edit. */\n#include \"tinycl_train.h\"\n\n"
                               + "\n".join(emit.data),
        **{f"Makefile.{t.name}": makefile_train(t, runtime_sources) for t in TARGETS.values()},
    }
    pack = TrainRegion("pack_bits", "pack_bits", "loop")
    frame_regions = [*(TrainRegion(r.name, r.kernel, "frame", r.layer, r.macs) for r in frozen_regions),
                     TrainRegion("latent_encode", latent_region.kernel, "frame"), pack,
                     TrainRegion("frame_end", "", "loop")]
    step_all = [TrainRegion("batch", "unpack_bits", "loop"), *step_regions, TrainRegion("step_end", "", "loop")]
    test_regions = [*(TrainRegion(r.name, r.kernel, "frame", r.layer, r.macs) for r in frozen_regions),
                    TrainRegion("latent_encode", latent_region.kernel, "frame"),
                    TrainRegion("predict", "tinycl_train_predict", "test"), TrainRegion("test_end", "", "loop")]
    harness = harness_buffers(dep, stage, settings)
    all_buffers = {**buffers, **emit.buffers, **{k: v for k, v in harness.items() if k not in HARNESS_EXTERNAL}}
    external = {**emit.external, **{k: v for k, v in harness.items() if k in HARNESS_EXTERNAL}}
    constants = {**writer.constants, **emit.constants}
    return TrainProject(files, all_buffers, external, constants, frame_regions, step_all, test_regions, emit.params,
                        kept, stage, settings, random_layers)
