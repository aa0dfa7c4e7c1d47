"""The training program measured: bytes kept for backward per layer, static RAM and the stack's
high-water mark against ``tinycl cost``'s memory model, and instructions per step by layer and
phase (counted under QEMU by the project's plugin), with the time they take at a stated clock.

Instructions are not cycles: times here take cycles = instructions, an assumption (an M4 runs
such loops at 1.2-1.6 cycles per instruction from zero-wait memory, REFERENCES.md), at the
clock the measured targets assume (``device/targets/*_qemu.toml``: 80 MHz).
"""

from __future__ import annotations

import re

import numpy as np

from tinycl.export.measure import CostSide
from tinycl.export.toolchains import STACK_BYTES, get_target
from tinycl.export.train_generate import TrainProject
from tinycl.export.train_verify import CTrace

MEASURED_TARGETS = {"cortex-m4": "cortex_m4_qemu", "rv32": "rv32_qemu"}

# (pattern, cost-model term or None, what the buffer is); first match wins
TRAIN_BUFFER_TERMS: list[tuple[str, str | None, str]] = [
    (r"tinycl_frozen\d+_weight", "frozen_weights_bytes", "INT8 weights, BN folded"),
    (r"tinycl_frozen\d+_(bias|multiplier|right_shift)", "frozen_requant_bytes", "per-channel int32 requantization"),
    (r"tinycl_t\d+_\w+_grad", "adaptive_grads_bytes", "FP32 gradient"),
    (r"tinycl_t\d+_\w+_momentum", "adaptive_momentum_bytes", "FP32 SGD momentum"),
    (r"tinycl_t\d+_\w+ \(initial values\)", None, "initial parameter values (the flash image of .data)"),
    (r"tinycl_t\d+_(weight|bias|gamma|beta|running_mean|running_var)", "adaptive_weights_bytes",
     "FP32 parameter or batch renorm running statistic"),
    (r"tinycl_t\d+_(kept|input|mask)", "activation_bytes", "kept for backward (whole mini-batch)"),
    (r"tinycl_act\d|tinycl_(grad_)?logits|tinycl_latent", "activation_bytes", "transient FP32 (whole mini-batch)"),
    (r"tinycl_frozen_act\d+|lr_u8", "activation_bytes", "UINT8 frozen-stage activation"),
    (r"memory_rows", "replay_bytes", "packed Q-bit replay memory"),
    (r"memory_labels|new_labels", "label_bytes", "labels"),
    (r"new_rows", "new_latents_bytes", "this experience's latents, packed"),
    (r"frame|tinycl_input_s8", "input_image_bytes", "camera frame (uint8 HWC) and its INT8 codes"),
]

TERM_NOTES = {
    "activation_bytes": "batch renormalization in training needs the whole mini-batch's statistics before any "
                        "sample can go on, so the device keeps every sample's activations and so does the cost "
                        "model (device.memory.samples_held_for; with --norm frozen it keeps one sample's, as "
                        "PULP-TrainLib accumulates gradients sample by sample); the first layer keeps nothing: its "
                        "input is the batch's Q-bit codes",
    "adaptive_weights_bytes": "same terms: FP32 weights, BN gamma, beta and running statistics",
    "adaptive_grads_bytes": "one FP32 gradient per trainable value; bias-only convs have none",
    "adaptive_momentum_bytes": "one FP32 momentum value per trainable value",
    "new_latents_bytes": "the largest replayed experience, packed at Q bits (the cost model: its new_images)",
    "label_bytes": "one byte per replay and per new latent",
    "input_image_bytes": "the camera frame (uint8 HWC) and its INT8 codes (CHW): two copies",
    "replay_bytes": "N x ceil(D x Q / 8), as modelled",
}


def buffer_term(name: str) -> tuple[str | None, str]:
    for pattern, term, what in TRAIN_BUFFER_TERMS:
        if re.fullmatch(pattern, name):
            return term, what
    return None, "loop state or scratch"


def kept_report(project: TrainProject) -> list[dict]:
    """Per layer: bytes kept for backward over a whole mini-batch, by kind, and what a dense
    update of the same layer keeps (the sparse update keeps only its chosen input channels)."""
    layers: dict[int, dict] = {}
    for entry in project.kept:
        row = layers.setdefault(entry["layer"], {"layer": entry["layer"], "kept_bytes": 0, "dense_kept_bytes": 0,
                                                 "parts": []})
        row["kept_bytes"] += entry["bytes"]
        dense = entry["bytes"]
        if entry["channels"] and entry["of_channels"] and entry["channels"] != entry["of_channels"]:
            dense = entry["bytes"] * entry["of_channels"] // max(entry["channels"], 1)
        if "input" in entry["what"] and entry["channels"] == 0 and entry["op"] != 0:
            op = project.stage.ops[entry["op"]]
            spatial = int(np.prod(op.in_shape[1:])) if hasattr(op, "in_shape") else 1
            dense = 4 * project.settings.minibatch * op.selection.num_channels * spatial  # bias-only keeps none
        row["dense_kept_bytes"] += dense
        row["parts"].append({k: entry[k] for k in ("what", "channels", "of_channels", "bytes", "buffer", "note")})
    return [layers[k] for k in sorted(layers)]


def train_memory_report(project: TrainProject, cost: CostSide, target: str,
                        symbols: dict[str, tuple[int, str]] | None = None, sections: dict[str, int] | None = None,
                        stack_bytes: int | None = None) -> dict:
    spec = get_target(target)
    rows = []
    for name, size in project.buffers.items():
        term, what = buffer_term(name)
        row = {"name": name, "bytes": size, "memory": "ram", "cost_term": term, "what": what}
        if symbols is not None:
            elf = symbols.get(name)
            row["elf_bytes"] = None if elf is None else elf[0]
        rows.append(row)
    for name, size in project.external.items():
        term, what = buffer_term(name)
        row = {"name": name, "bytes": size, "memory": "external" if spec.ext_ram_bytes else "ram", "cost_term": term,
               "what": what}
        if symbols is not None:
            elf = symbols.get(name)
            row["elf_bytes"] = None if elf is None else elf[0]
        rows.append(row)
    for name, size in project.constants.items():
        term, what = buffer_term(name)
        rows.append({"name": name, "bytes": size, "memory": "flash" if spec.flash_bytes else "ram", "cost_term": term,
                     "what": what})
    terms = [{"term": term, "cost_model_bytes": cost_bytes,
              "exported_bytes": sum(r["bytes"] for r in rows if r["cost_term"] == term),
              "note": TERM_NOTES.get(term, "")} for term, cost_bytes in cost.memory_terms.items()]
    ram_static = sum(r["bytes"] for r in rows if r["memory"] == "ram")
    external_static = sum(r["bytes"] for r in rows if r["memory"] == "external")
    report = {
        "buffers": rows,
        "terms": terms,
        "kept_for_backward_bytes": sum(e["bytes"] for e in project.kept),
        "totals": {"cost_model_bytes": cost.memory_total, "generator_ram_bytes": ram_static,
                   "generator_external_ram_bytes": external_static,
                   "generator_flash_bytes": sum(r["bytes"] for r in rows if r["memory"] == "flash"),
                   "stack_reserved_bytes": STACK_BYTES if spec.emulator else None},
        "cost_model_config": cost.config,
    }
    if symbols is not None:
        mismatched = [r["name"] for r in rows if r["memory"] in ("ram", "external") and "elf_bytes" in r
                      and r["elf_bytes"] is not None and r["elf_bytes"] != r["bytes"]]
        report["sizes_mismatching_elf"] = mismatched
    if sections is not None:
        report["sections"] = sections
        static = sections["data"] + sections["bss"] - (STACK_BYTES if spec.emulator else 0)
        report["totals"]["static_ram_bytes_elf"] = static
        if symbols is not None:
            report["totals"]["external_ram_bytes_elf"] = sum((symbols.get(name) or (0,))[0]
                                                             for name in project.external)
        if stack_bytes:
            report["totals"]["stack_high_water_bytes"] = stack_bytes
            report["totals"]["peak_ram_measured_bytes"] = static + stack_bytes
            report["totals"]["peak_ram_vs_cost_model"] = (static + stack_bytes) / cost.memory_total
    return report


# ---------------------------------------------------------------- instructions


def split_train_counts(project: TrainProject, c: CTrace, frames: list[int], test_images: int, total: int,
                       marks: np.ndarray) -> dict[str, np.ndarray]:
    """The counter's marks cut into the program's regions (train_main.c's sequence)."""
    experiences = len(frames)
    steps = c.steps_per_experience(experiences)
    nf, ns, nt = len(project.frame_regions), len(project.step_regions), len(project.test_regions)
    expected = sum(n * nf + 1 + s * ns + 1 for n, s in zip(frames, steps, strict=True)) + test_images * nt
    if len(marks) != expected:
        raise RuntimeError(f"the counting plugin saw {len(marks)} region marks, the training program makes "
                           f"{expected}")
    spans = np.diff(np.append(marks, total))
    at = 0
    out: dict[str, list] = {"frames": [], "setup": [], "steps": [], "memory": [], "test": []}
    for n, s in zip(frames, steps, strict=True):
        out["frames"].append(spans[at : at + n * nf].reshape(n, nf))
        at += n * nf
        out["setup"].append(spans[at])
        at += 1
        out["steps"].append(spans[at : at + s * ns].reshape(s, ns))
        at += s * ns
        out["memory"].append(spans[at])
        at += 1
    test = spans[at : at + test_images * nt].reshape(test_images, nt)
    return {"frames": np.concatenate(out["frames"]), "frames_per_experience": out["frames"],
            "setup": np.array(out["setup"]),
            "steps": np.concatenate(out["steps"]) if out["steps"] else np.zeros((0, ns)),
            "steps_per_experience": out["steps"], "memory": np.array(out["memory"]), "test": test}


def instruction_report(project: TrainProject, c: CTrace, frames: list[int], test_images: int, total: int,
                       marks: np.ndarray, target: str) -> dict:
    from tinycl.device import load_target

    parts = split_train_counts(project, c, frames, test_images, total, marks)
    batches = np.array([s.batch for s in c.steps])
    full = batches == project.settings.minibatch
    chosen = full if full.any() else np.ones(len(batches), bool)
    steps = parts["steps"][chosen].astype(np.float64)
    mean = steps.mean(axis=0) if len(steps) else np.zeros(len(project.step_regions))
    batch = float(batches[chosen].mean()) if len(batches) else 0.0
    regions = [{"name": r.name, "kernel": r.kernel, "phase": r.phase, "layer": r.layer,
                "instructions": float(v), "macs": int(r.macs * batch),
                "instructions_per_mac": float(v / (r.macs * batch)) if r.macs and batch else None}
               for r, v in zip(project.step_regions, mean, strict=True)]
    phases: dict[str, float] = {}
    for r in regions:
        phases[r["phase"]] = phases.get(r["phase"], 0.0) + r["instructions"]
    layers: dict[int, dict] = {}
    for r in regions:
        if r["layer"] is None:
            continue
        row = layers.setdefault(r["layer"], {"layer": r["layer"], "forward": 0.0, "weight_grad": 0.0,
                                             "input_grad": 0.0, "update": 0.0, "macs_forward": 0})
        row[r["phase"]] = row.get(r["phase"], 0.0) + r["instructions"]
        if r["phase"] == "forward":
            row["macs_forward"] += r["macs"]
    kernels: dict[tuple[str, str], dict] = {}
    for r in regions:
        if not r["kernel"] or not r["macs"]:
            continue
        row = kernels.setdefault((r["kernel"], r["phase"]), {"kernel": r["kernel"], "phase": r["phase"],
                                                             "instructions": 0.0, "macs": 0})
        row["instructions"] += r["instructions"]
        row["macs"] += r["macs"]
    for row in kernels.values():
        row["instructions_per_mac"] = row["instructions"] / row["macs"]
    step_total = float(mean.sum())
    train_only = float(sum(r["instructions"] for r in regions if r["phase"] != "loop"))
    per_experience = [float(f.sum() + s + st.sum() + m) for f, s, st, m in zip(
        parts["frames_per_experience"], parts["setup"], parts["steps_per_experience"], parts["memory"], strict=True)]
    frame_mean = float(parts["frames"].sum(axis=1).mean()) if len(parts["frames"]) else 0.0
    key = MEASURED_TARGETS.get(target)
    freq = float(load_target(key).freq_hz.value) if key else None
    later = per_experience[1:] or per_experience
    report = {
        "steps_counted": int(chosen.sum()), "batch": batch, "full_batch_steps_only": bool(full.any()),
        "per_step": {"instructions": step_total, "train_instructions": train_only, "phases": phases,
                     "instructions_per_sample": train_only / batch if batch else None},
        "regions": regions,
        "layers": [layers[k] for k in sorted(layers)],
        "kernels": sorted(kernels.values(), key=lambda r: (r["phase"], r["kernel"])),
        "per_frame_instructions": frame_mean,
        "per_experience_instructions": {"batch_0": per_experience[0], "mean_after_batch_0": float(np.mean(later)),
                                        "each": per_experience},
        "memory_update_instructions_mean": float(parts["memory"].mean()),
        "test_frame_instructions": float(parts["test"].sum(axis=1).mean()) if test_images else None,
        "total": int(total),
        "note": "per step: mean over the steps with a full mini-batch; each region includes its kernel calls and "
                "one region mark (a call and a return)",
    }
    if freq:
        report["time_at_clock"] = {
            "clock_hz": freq, "clock_source": f"device/targets/{key}.toml (an assumption there)",
            "assumption": "cycles = instructions (an in-order MCU core takes 1.2-1.6 cycles per instruction on such "
                          "loops from zero-wait memory, REFERENCES.md, so real times are longer)",
            "seconds_per_minibatch": step_total / freq,
            "seconds_per_frame_frozen_stage": frame_mean / freq,
            "seconds_per_experience_batch_0": per_experience[0] / freq,
            "seconds_per_experience_mean_after_batch_0": float(np.mean(later)) / freq,
        }
    return report


def phase_table(instructions: dict) -> list[str]:
    """Instructions per full training step, by layer and phase."""
    lines = [f"{'layer':>5} {'forward':>13} {'weight grad':>13} {'input grad':>13} {'update':>11}"]
    for row in instructions["layers"]:
        lines.append(f"{row['layer']:>5} {row['forward']:>13,.0f} {row['weight_grad']:>13,.0f} "
                     f"{row['input_grad']:>13,.0f} {row['update']:>11,.0f}")
    phases = instructions["per_step"]["phases"]
    lines.append("phases: " + ", ".join(f"{k} {v:,.0f}" for k, v in phases.items()))
    return lines
