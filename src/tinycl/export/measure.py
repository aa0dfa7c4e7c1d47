"""Measure the exported program, not only the model: static memory and executed instructions.

- ``memory_report``: every static buffer and constant of the project (bytes from the
  generator and, once built, from the ELF symbol table) set beside the cost model's memory
  terms (``tinycl.device.memory``) for the same configuration, each buffer matched to the
  term that counts it, and each difference explained.
- ``instruction_report``: instructions executed per region (one kernel call between two
  region marks), per layer and per kernel, counted under QEMU by the project's plugin
  (``tools/tinycl_insn_count.c``), against the cost model's MACs (``tinycl.device.costs``):
  instructions per MAC per kernel.

Instructions are not cycles: ``tinycl cost`` turns instructions per MAC into MAC/cycle with a
stated cycles-per-instruction assumption (``device/targets/*_qemu.toml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tinycl.errors import TinyclError
from tinycl.export.deployment import Deployment
from tinycl.export.generate import ExportedProject, Region
from tinycl.export.toolchains import STACK_BYTES, get_target

# ---------------------------------------------------------------- the cost model's side


@dataclass(frozen=True)
class CostSide:
    """The cost model for the deployment's configuration: memory terms and per-layer MACs."""

    config: dict
    memory_terms: dict[str, int]
    memory_total: int
    layer_macs: dict[int, int]  # layer index -> forward MACs per sample
    layer_kinds: dict[int, str]


def cost_side(dep: Deployment, replays: int | None = None, new_images: int | None = None) -> CostSide:
    """``tinycl cost``'s model of the run's configuration (model, width, res, LR layer, N, Q).

    ``replays``: the memory's capacity N (the run's ``--replays``); defaults to the exported
    rows. ``new_images``: the CL batch the cost model sizes new latents for (its default).
    """
    from tinycl.device import CostConfig, estimate

    meta = dep.meta
    if "model" not in meta or "lr_layer" not in meta:
        raise TinyclError("the deployment does not name its model and LR layer (meta): no cost model to compare")
    rows = 0 if dep.replay_rows is None else len(dep.replay_rows)
    fields = {"model": str(meta["model"]), "width": float(meta.get("width", 1.0)), "res": int(dep.input_shape[1]),
              "lr_layer": int(meta["lr_layer"]), "replays": int(rows if replays is None else replays),
              "bits": dep.bits, "num_classes": dep.num_classes}
    config = CostConfig(**fields) if new_images is None else CostConfig(**fields, new_images=new_images)
    report = estimate(config, [])
    macs: dict[int, int] = {}
    kinds: dict[int, str] = {}
    for r in report.layers:  # a block's convs (one row each) add up to its layer
        macs[r.index] = macs.get(r.index, 0) + r.forward_macs
        kinds[r.index] = "block" if r.unit is not None else r.kind
    return CostSide({**fields, "new_images": config.new_images}, report.memory.terms(), report.memory.total_bytes,
                    macs, kinds)


# ---------------------------------------------------------------- memory

# (pattern, cost-model term or None, what the buffer is); first match wins
BUFFER_TERMS: list[tuple[str, str | None, str]] = [
    (r"tinycl_frozen\d+(_\d+)?_weight", "frozen_weights_bytes", "INT8 weights, BN folded"),
    (r"tinycl_frozen\d+(_\d+)?_(bias|multiplier|right_shift)", "frozen_requant_bytes",
     "per-channel int32 bias / multiplier / shift"),
    (r"tinycl_frozen\d+_add_(multiplier|right_shift)", "frozen_requant_bytes",
     "residual add: three int32 multipliers and shifts"),
    (r"tinycl_adaptive\d+_(weight|bias)", "adaptive_weights_bytes", "FP32 weights"),
    (r"tinycl_adaptive\d+_(scale|shift)", "adaptive_weights_bytes", "FP32 BN in inference form"),
    (r"tinycl_replay_rows", "replay_bytes", "packed Q-bit replay memory"),
    (r"tinycl_replay_labels", "label_bytes", "replay labels"),
    (r"frame", "input_image_bytes", "camera frame, uint8 HWC (harness)"),
    (r"tinycl_input_s8", "input_image_bytes", "the frame's INT8 codes, CHW"),
    (r"tinycl_frozen_act\d+", "activation_bytes",
     "INT8 / UINT8 activation buffer (ping-pong; a third for residual blocks)"),
    (r"lr_u8", "activation_bytes", "the LR layer's UINT8 output (harness)"),
    (r"tinycl_adaptive_act\d+", "activation_bytes", "FP32 ping-pong activation buffer"),
    (r"lr_packed", "new_latents_bytes", "one packed new latent (harness)"),
    (r"lr_codes", None, "one latent's Q-bit codes, one byte each (harness)"),
    (r"logits", None, "FP32 logits (harness)"),
    (r"tinycl_input_table", None, "camera byte -> INT8 code table, 256 per channel"),
    (r"tinycl_latent_(step|multiplier|right_shift)", None, "Q-bit latent quantizer parameters"),
    (r"tinycl_(frozen|adaptive)\d+(_\d+)?_shape", None, "layer geometry (tinycl_conv_shape)"),
    (r"stack", None, "stack reserved by the linker script"),
]

# Why the exported program and the cost model differ, per cost-model term.
TERM_NOTES = {
    "frozen_weights_bytes": "same count: INT8 weights with BN folded, one byte per weight",
    "frozen_requant_bytes": "the cost model counts 9 B per output channel (int32 bias, int32 multiplier, int8 "
                            "shift); the runtime keeps the shift as int32 (12 B per channel)",
    "adaptive_weights_bytes": "the cost model counts what training keeps: FP32 weights plus BN gamma, beta, running "
                              "mean and variance (4 values per channel); inference folds each BN into a scale and a "
                              "shift (2 per channel)",
    "adaptive_grads_bytes": "training only: an inference build has no gradients (the --train export, next issue)",
    "adaptive_momentum_bytes": "training only: no SGD momentum in an inference build",
    "activation_bytes": "the cost model takes the larger of the frozen stage's peak (input + output of one layer, "
                        "UINT8) and training's kept + transient FP32 activations; the inference build holds two "
                        "UINT8 ping-pong buffers (largest even / odd layer output), the LR output and two FP32 "
                        "ping-pong buffers for the adaptive forward, all static, none overlaid",
    "replay_bytes": "same formula N x ceil(D x Q / 8); the export holds the memory's filled rows (as constants: "
                    "inference only reads them), the cost model its capacity N",
    "new_latents_bytes": "the cost model stores a whole CL batch of new latents for training; inference packs one",
    "label_bytes": "the cost model counts a label per replay and per new latent; the export only the replays'",
    "input_image_bytes": "the cost model counts one 3 x res x res frame; the runtime holds the camera frame (uint8 "
                         "HWC) and its INT8 codes (CHW), two copies",
    "scratch_bytes": "the cost model sizes im2col scratch for CMSIS-NN / PULP-TrainLib style kernels; the runtime's "
                     "direct convolutions need none",
}


def buffer_term(name: str) -> tuple[str | None, str]:
    for pattern, term, what in BUFFER_TERMS:
        if re.fullmatch(pattern, name):
            return term, what
    return None, "runtime or harness"


def memory_report(project: ExportedProject, cost: CostSide, target: str,
                  symbols: dict[str, tuple[int, str]] | None = None,
                  sections: dict[str, int] | None = None) -> dict:
    """Every buffer (RAM) and constant (flash on an MCU) matched to the cost model's term.

    ``symbols``: ``elf_symbols`` of the built binary, when built; each generated symbol's
    size is then the ELF's (``elf_bytes``), and ``size_matches`` says it equals the
    generator's figure. Without it, the generator's sizes stand alone.
    """
    spec = get_target(target)
    entries = [(name, size, "ram") for name, size in project.buffers.items()]
    entries += [(name, size, "flash" if spec.flash_bytes else "ram") for name, size in project.constants.items()]
    if spec.emulator:
        entries.append(("stack", STACK_BYTES, "ram"))
    buffers = []
    for name, size, memory in entries:
        term, what = buffer_term(name)
        row = {"name": name, "bytes": size, "memory": memory, "cost_term": term, "what": what}
        if symbols is not None and name != "stack":
            elf = symbols.get(name)
            row["elf_bytes"] = None if elf is None else elf[0]
            row["size_matches"] = elf is not None and elf[0] == size
        buffers.append(row)
    terms = []
    for term, cost_bytes in cost.memory_terms.items():
        exported = sum(row["bytes"] for row in buffers if row["cost_term"] == term)
        terms.append({"term": term, "cost_model_bytes": cost_bytes, "exported_bytes": exported,
                      "buffers": [row["name"] for row in buffers if row["cost_term"] == term],
                      "note": TERM_NOTES.get(term, "")})
    unmatched = [row for row in buffers if row["cost_term"] is None]
    report = {
        "buffers": buffers,
        "terms": terms,
        "no_counterpart": {"buffers": [row["name"] for row in unmatched],
                           "bytes": sum(row["bytes"] for row in unmatched),
                           "note": "kept by the runtime, not modelled: the harness's per-frame outputs, the input "
                                   "table, the latent quantizer's parameters, layer geometry and the stack"},
        "totals": {
            "cost_model_bytes": cost.memory_total,
            "exported_ram_bytes": sum(row["bytes"] for row in buffers if row["memory"] == "ram"),
            "exported_flash_bytes": sum(row["bytes"] for row in buffers if row["memory"] == "flash"),
        },
        "source": "bytes: the generator's sizes" + (", checked against the ELF symbol table (nm -S)"
                                                    if symbols is not None else "; not built"),
    }
    if symbols is not None:
        report["all_sizes_match_elf"] = all(row.get("size_matches", True) for row in buffers)
        named = {row["name"] for row in buffers}
        # sized data symbols the generator does not list: the harness's and, on the host, libc's
        report["elf_only"] = [{"name": name, "bytes": size, "nm_type": kind} for name, (size, kind)
                              in sorted(symbols.items()) if name not in named]
    if sections is not None:
        report["sections"] = sections
        # Berkeley size's "text" holds code and read-only data (the constants) on every target
        report["code_bytes_estimate"] = sections["text"] - sum(project.constants.values())
    return report


# ---------------------------------------------------------------- instructions


def split_counts(project: ExportedProject, frames: int, replay_rows: int, total: int, marks: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Instructions per region: ``[frames, len(frame_regions)]`` and ``[replay_rows,
    len(replay_regions)]`` from the counter values at each mark (``read_counts``).

    Region k of a frame is what ran between its k-th and (k+1)-th mark; the last region ends
    at the next frame's first mark (or the first replay row's, or the program's end). A
    region's count includes the call into its kernel and the mark's own call and return (a
    few instructions).
    """
    per_frame, per_row = len(project.frame_regions), len(project.replay_regions)
    expected = frames * per_frame + replay_rows * per_row
    if len(marks) != expected:
        raise RuntimeError(f"the counting plugin saw {len(marks)} region marks, the program makes {expected} "
                           f"({frames} frames x {per_frame} + {replay_rows} replay rows x {per_row})")
    spans = np.diff(np.append(marks, total))
    frame_counts = spans[: frames * per_frame].reshape(frames, per_frame)
    replay_counts = spans[frames * per_frame :].reshape(replay_rows, per_row)
    return frame_counts, replay_counts


def _kernel_kind(region: Region) -> str:
    """What the kernel's work is counted in: MACs, or values for element-wise kernels."""
    return "macs" if region.macs else "values"


def instruction_report(project: ExportedProject, cost: CostSide, frame_counts: np.ndarray,
                       replay_counts: np.ndarray, total: int) -> dict:
    """Per region, layer and kernel: instructions per frame (mean over the counted frames)
    against the cost model's MACs. The per-kernel figure is MAC-weighted over the kernel's
    layers: sum of instructions / sum of MACs."""
    mean = frame_counts.mean(axis=0)
    regions = []
    for k, region in enumerate(project.frame_regions):
        cost_macs = cost.layer_macs.get(region.layer) if region.macs and region.layer is not None else None
        macs = cost_macs if cost_macs is not None else region.macs
        regions.append({
            "name": region.name, "kernel": region.kernel, "stage": region.stage, "layer": region.layer,
            "instructions": float(mean[k]), "instructions_min": int(frame_counts[:, k].min()),
            "instructions_max": int(frame_counts[:, k].max()), "macs": macs, "generator_macs": region.macs,
            "values": region.values,
            "instructions_per_mac": float(mean[k] / macs) if macs else None,
            "instructions_per_value": float(mean[k] / region.values) if not macs and region.values else None,
        })
    layers: dict[int, dict] = {}
    for row in regions:
        if row["layer"] is None:
            continue
        entry = layers.setdefault(row["layer"], {"layer": row["layer"], "kind": cost.layer_kinds.get(row["layer"]),
                                                 "kernels": [], "instructions": 0.0,
                                                 "macs": cost.layer_macs.get(row["layer"], 0)})
        entry["kernels"].append(row["kernel"])
        entry["instructions"] += row["instructions"]
    for entry in layers.values():
        entry["instructions_per_mac"] = entry["instructions"] / entry["macs"] if entry["macs"] else None
    kernels: dict[str, dict] = {}
    for row, region in zip(regions, project.frame_regions, strict=True):
        if not region.kernel:
            continue
        entry = kernels.setdefault(region.kernel, {"kernel": region.kernel, "stage": region.stage,
                                                   "counted_in": _kernel_kind(region), "calls": 0,
                                                   "instructions": 0.0, "macs": 0, "values": 0, "layers": []})
        entry["calls"] += 1
        entry["instructions"] += row["instructions"]
        entry["macs"] += row["macs"] or 0
        entry["values"] += region.values
        if region.layer is not None:
            entry["layers"].append(region.layer)
    for entry in kernels.values():
        if entry["counted_in"] == "macs":
            per_layer = [r["instructions_per_mac"] for r in regions if r["kernel"] == entry["kernel"]]
            entry["instructions_per_mac"] = entry["instructions"] / entry["macs"]
            entry["instructions_per_mac_range"] = [min(per_layer), max(per_layer)]
        else:
            entry["instructions_per_value"] = entry["instructions"] / entry["values"] if entry["values"] else None
    stage_sum = {stage: float(sum(r["instructions"] for r in regions if r["stage"] == stage))
                 for stage in ("frozen", "latent", "adaptive", "harness")}
    frozen_macs = sum(r["macs"] for r in regions if r["stage"] == "frozen" and r["macs"])
    adaptive_macs = sum(r["macs"] for r in regions if r["stage"] == "adaptive" and r["macs"])
    replay = None
    if replay_counts.size:
        replay_mean = replay_counts.mean(axis=0)
        replay = {"rows": int(len(replay_counts)),
                  "regions": [{"name": r.name, "kernel": r.kernel, "instructions": float(v)}
                              for r, v in zip(project.replay_regions, replay_mean, strict=True)],
                  "instructions_per_row": float(replay_mean.sum())}
    mismatched = [r["name"] for r in regions if r["macs"] and r["generator_macs"] and r["macs"] != r["generator_macs"]]
    return {
        "frames": int(len(frame_counts)),
        "total": int(total),
        "per_frame": {**{f"{k}_instructions": v for k, v in stage_sum.items()},
                      "instructions": float(mean.sum()),
                      "frozen_macs": int(frozen_macs), "adaptive_macs": int(adaptive_macs),
                      "frozen_instructions_per_mac": stage_sum["frozen"] / frozen_macs if frozen_macs else None,
                      "adaptive_instructions_per_mac":
                          stage_sum["adaptive"] / adaptive_macs if adaptive_macs else None},
        "regions": regions,
        "layers": [layers[k] for k in sorted(layers)],
        "kernels": list(kernels.values()),
        "replay": replay,
        "macs_source": "tinycl.device.costs.layer_costs (cost model), padded taps counted",
        "macs_mismatch_regions": mismatched,
        "note": "mean instructions per frame over the counted frames (requantization and ReLU branches depend on the "
                "data); each region includes its kernel call and one region mark (a call and a return)",
    }


def kernel_table(instructions: dict) -> list[str]:
    """A short text table: instructions per MAC (or per value) per kernel."""
    lines = [f"{'kernel':<22} {'calls':>5} {'MACs/frame':>12} {'instr/frame':>13} {'instr/MAC':>10} {'range':>13}"]
    for k in instructions["kernels"]:
        if k["counted_in"] == "macs":
            low, high = k["instructions_per_mac_range"]
            lines.append(f"{k['kernel']:<22} {k['calls']:>5} {k['macs']:>12,} {k['instructions']:>13,.0f} "
                         f"{k['instructions_per_mac']:>10.2f} {low:>6.2f}-{high:<6.2f}")
        else:
            per_value = k["instructions_per_value"] or 0.0
            lines.append(f"{k['kernel']:<22} {k['calls']:>5} {'-':>12} {k['instructions']:>13,.0f} "
                         f"{'-':>10} {per_value:>7.2f}/value")
    return lines


def memory_table(memory: dict) -> list[str]:
    lines = [f"{'cost-model term':<26} {'cost model B':>13} {'exported B':>12}  buffers"]
    for t in memory["terms"]:
        names = ", ".join(t["buffers"][:3]) + (f", ... ({len(t['buffers'])})" if len(t["buffers"]) > 3 else "")
        lines.append(f"{t['term']:<26} {t['cost_model_bytes']:>13,} {t['exported_bytes']:>12,}  {names or '-'}")
    other = memory["no_counterpart"]
    lines.append(f"{'(no counterpart)':<26} {'-':>13} {other['bytes']:>12,}  {len(other['buffers'])} buffers")
    totals = memory["totals"]
    lines.append(f"{'total':<26} {totals['cost_model_bytes']:>13,} "
                 f"{totals['exported_ram_bytes'] + totals['exported_flash_bytes']:>12,}  "
                 f"RAM {totals['exported_ram_bytes']:,} + flash {totals['exported_flash_bytes']:,}")
    return lines
