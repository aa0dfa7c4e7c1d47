"""``tinycl export``'s work, callable without the command line: a run directory in, a C99
project out; with ``verify``, built, run (natively or under QEMU, counting instructions) and
compared with Python, and the device measured (static memory, instructions per layer and
kernel) next to the cost model.

Files written in the project folder: the project itself, ``export_report.json`` (memory and,
when verified on a QEMU target, instructions) and, when verified, ``verify.json``. Both JSON
files are written atomically (``tinycl.fileio``).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinycl.errors import TinyclError
from tinycl.export.generate import ExportedProject, generate_project, write_project
from tinycl.export.measure import CostSide, cost_side, instruction_report, memory_report, split_counts
from tinycl.export.rundir import RunDirectory, load_run, verification_frames
from tinycl.export.toolchains import (
    HOST_CC,
    build_plugin,
    build_project,
    check_fits,
    elf_sections,
    elf_symbols,
    get_target,
    read_counts,
    require_tools,
    run_project,
)
from tinycl.export.verify import LOGITS_RTOL, Outputs, compare_outputs, reference_outputs
from tinycl.fileio import write_atomic

REPORT_FILE = "export_report.json"
VERIFY_FILE = "verify.json"
DEFAULT_IMAGES = 256  # issue 16: identical predictions on >= 256 test images
# QEMU runs ~100 M guest instructions per second here (TOOLCHAINS.md); the runtime's kernels
# take under 25 instructions per MAC; a run gets 10x that estimate before it is called hung.
QEMU_INSTRUCTIONS_PER_S = 1e8
INSTRUCTIONS_PER_MAC_BOUND = 25


@dataclass
class ExportResult:
    run: RunDirectory
    target: str
    project: ExportedProject
    cost: CostSide
    report: dict
    verify: dict | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verify is None or bool(self.verify["checks"]["ok"])


def finite(value: object) -> object:
    """JSON without NaN / Infinity (not JSON): non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, np.generic):
        return finite(value.item())
    return value


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(finite(data), indent=1) + "\n")


def tool_version(command: str) -> str:
    try:
        out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def mismatches(want: Outputs, got: Outputs) -> dict[str, int]:
    """How many images (rows) differ, per output; -1 where the shapes differ."""

    def rows(a: np.ndarray, b: np.ndarray) -> int:
        if a.shape != b.shape:
            return -1
        return int((a.reshape(len(a), -1) != b.reshape(len(b), -1)).any(axis=1).sum()) if len(a) else 0

    return {"lr_u8": rows(want.lr_u8, got.lr_u8), "codes": rows(want.codes, got.codes),
            "packed": rows(want.packed, got.packed), "predictions": rows(want.predictions, got.predictions),
            "replay_codes": rows(want.replay_codes, got.replay_codes),
            "replay_predictions": rows(want.replay_predictions, got.replay_predictions)}


def run_timeout_s(project: ExportedProject, frames: int, replay_rows: int, emulated: bool) -> float:
    """A generous limit for one run: 10x the time its MACs could take, plus two minutes."""
    macs = frames * sum(r.macs for r in project.frame_regions) + replay_rows * sum(r.macs for r in
                                                                                   project.replay_regions)
    speed = QEMU_INSTRUCTIONS_PER_S if emulated else 10 * QEMU_INSTRUCTIONS_PER_S
    return 120 + 10 * macs * INSTRUCTIONS_PER_MAC_BOUND / speed


def export_run(run_dir: Path, out_dir: Path | None, target: str, verify: bool = False,
               images: int = DEFAULT_IMAGES) -> ExportResult:
    """Export ``run_dir`` for ``target`` into ``out_dir`` (default ``RUN_DIR/export-TARGET``).

    Every refusal (no deployment, unknown target, a layer the runtime lacks, too big for the
    target, missing toolchain) is one ``TinyclError`` line raised before the project folder
    is written.
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    spec = get_target(target)
    if images < 1:
        raise TinyclError(f"--images must be >= 1, got {images}")
    run = load_run(Path(run_dir))
    dep = run.deployment
    project = generate_project(dep)
    check_fits(project.buffers, project.constants, target)
    if verify:
        require_tools(target, (HOST_CC,) if spec.emulator else ())
    cost = cost_side(dep, replays=run.replays)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / f"export-{target}"
    project = write_project(dep, out, project)
    timings["generate_s"] = time.perf_counter() - start
    report = {"target": target, "target_description": spec.description, "run_dir": str(run_dir),
              "project": str(out), "deployment": dict(dep.meta), "cost_model_config": cost.config,
              "memory": memory_report(project, cost, target)}
    result = ExportResult(run, target, project, cost, report, timings_s=timings)
    if not verify:
        write_json(out / REPORT_FILE, report)
        return result

    t = time.perf_counter()
    frames, labels, where = verification_frames(Path(run_dir), images, dep.input_shape[1])
    timings["load_images_s"] = time.perf_counter() - t
    t = time.perf_counter()
    build_project(out, target)
    if spec.emulator:
        build_plugin(out)
    timings["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rows = 0 if dep.replay_rows is None else len(dep.replay_rows)
    timeout = run_timeout_s(project, len(frames), rows, bool(spec.emulator))
    got = run_project(out, target, frames, timeout_s=timeout, count_instructions=bool(spec.emulator))
    timings["run_s"] = time.perf_counter() - t
    t = time.perf_counter()
    want = reference_outputs(dep, frames)  # IntFrozenStage, LatentQuantizer, pack_bits, torch F ops: not the C
    timings["python_s"] = time.perf_counter() - t
    checks = compare_outputs(want, got)
    report["memory"] = memory_report(project, cost, target, elf_symbols(out, target), elf_sections(out, target))
    if spec.emulator:
        total, marks = read_counts(out, target)
        frame_counts, replay_counts = split_counts(project, len(frames), rows, total, marks)
        report["instructions"] = instruction_report(project, cost, frame_counts, replay_counts, total)
        report["instructions"]["counter"] = "tools/tinycl_insn_count.c (QEMU TCG plugin), " + tool_version(
            spec.emulator[0])
    report["compiler"] = tool_version(spec.compiler)
    timings["total_s"] = time.perf_counter() - start
    verify_data = {
        "target": target, "target_description": spec.description, "run_dir": str(run_dir), "images": len(frames),
        "images_source": where, "checks": checks, "mismatched_rows": mismatches(want, got),
        "logits_rtol": LOGITS_RTOL,
        "accuracy_on_images": {"device": float((got.predictions == labels).mean()) if len(got.predictions) == len(
            labels) else None, "python": float((want.predictions == labels).mean())},
        "run_final_accuracy": run.summary.get("final_accuracy"),
        "compiler": report["compiler"], "emulator": tool_version(spec.emulator[0]) if spec.emulator else None,
        "instructions_per_image": report.get("instructions", {}).get("per_frame", {}).get("instructions"),
        "timings_s": timings,
        "python_reference": "tinycl.quant IntFrozenStage -> LatentQuantizer.encode -> tinycl.quant.packing.pack_bits; "
                            "LatentQuantizer.decode -> the adaptive ops in torch.nn.functional (float32)",
    }
    report["verify"] = {"ok": checks["ok"], "file": VERIFY_FILE}
    write_json(out / VERIFY_FILE, verify_data)
    write_json(out / REPORT_FILE, report)
    result.verify = verify_data
    return result


def verdict_line(result: ExportResult) -> str:
    """The one-line verdict of a verification."""
    v = result.verify
    assert v is not None
    c, bad = v["checks"], v["mismatched_rows"]
    n = v["images"]
    facts = []
    if c["lr_u8_identical"] and c["codes_identical"] and c["packed_identical"]:
        facts.append("LR codes and packed bytes bit-identical")
    else:
        facts.append(f"LR outputs / codes / packed bytes differ in {bad['lr_u8']} / {bad['codes']} / {bad['packed']} "
                     f"of {n} images")
    err = c["logits_max_rel_error"]
    facts.append(f"logits max rel. error {err:.1e} ({'<=' if err <= LOGITS_RTOL else '>'} {LOGITS_RTOL:g})")
    accuracy = v["accuracy_on_images"]["device"]
    if c["predictions_identical"]:
        facts.append("predictions identical" + (f" (accuracy {100 * accuracy:.1f}%)" if accuracy is not None else ""))
    else:
        facts.append(f"predictions differ on {bad['predictions']} of {n} images")
    if c["replay_rows"]:
        same = c["replay_codes_identical"] and c["replay_predictions_identical"] and c["replay_labels_identical"] \
            and c["replay_logits_max_rel_error"] <= LOGITS_RTOL
        facts.append(f"{c['replay_rows']} replay rows {'identical' if same else 'DIFFER'}")
    if v["instructions_per_image"]:
        facts.append(f"{v['instructions_per_image'] / 1e6:.2f} M instructions per image")
    status = "passed" if c["ok"] else "FAILED"
    return f"verify on {result.target} {status}: {n} test images, " + ", ".join(facts)
