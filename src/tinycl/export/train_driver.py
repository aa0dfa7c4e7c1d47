"""``tinycl export RUN_DIR --train``: the continual-learning loop as a C99 project, and with
``--verify`` its run on the host or under QEMU held against the Python run.

Steps: the run is rebuilt from ``RUN_DIR/config.toml`` and traced (``train_trace``): its
initial adaptive stage, INT8 frozen stage and quantizer go into the project; with ``--verify``
its first experiences are traced (at least 3 and 100 steps, or the ``--experiences`` asked
for). Every refusal (a setting or layer the C loop lacks, a sparse spec it cannot express,
memory over the target's RAM, a missing toolchain) is one ``TinyclError`` line raised before
the project folder is written. Then the project and the stream (one file per experience,
camera frames and labels, and the test frames) are written; with ``--verify`` it is built, run
(counting instructions on QEMU), and its record compared (``train_verify``) and measured
(``train_measure``). Files: ``train_report.json`` (memory, kept bytes per layer,
instructions) and, when verified, ``train_verify.json``, both written atomically.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinycl.errors import TinyclError
from tinycl.export.deployment import FILE_NAME, Deployment, load_deployment
from tinycl.export.driver import finite, tool_version, write_json
from tinycl.export.generate import HARNESS_FILES, write_project_files
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
    run_binary,
)
from tinycl.export.train_generate import TRAIN_HARNESS, LoopSettings, TrainProject, generate_train_project
from tinycl.export.train_verify import compare_predictions, compare_traces, read_train_output
from tinycl.quant.int_blocks import IntBlock
from tinycl.quant.int_frozen import IntConvLayer

CONFIG_FILE = "config.toml"
REPORT_FILE = "train_report.json"
VERIFY_FILE = "train_verify.json"
STREAM_DIR = "stream"
DEFAULT_IMAGES = 256  # test images predicted after a partial stream (the whole stream: every test image)
MIN_STEPS, MIN_EXPERIENCES = 100, 3  # issue 17: loss over the first 100 steps, weights after 3 experiences
QEMU_INSTRUCTIONS_PER_S = 1e8  # TOOLCHAINS.md: ~100 M guest instructions per second here
INSTRUCTIONS_PER_MAC_BOUND = 25  # the runtime's kernels stay under this (train_report.json has the figures)


@dataclass
class TrainExportResult:
    target: str
    root: Path
    project: TrainProject
    report: dict
    verify: dict | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verify is None or bool(self.verify["ok"])


def load_run_config(run_dir: Path):
    from tinycl.config import from_dict, load_toml, validate

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TinyclError(f"run directory {run_dir} does not exist" if not run_dir.exists()
                          else f"{run_dir} is not a run directory (not a folder)")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise TinyclError(f"{run_dir} has no {CONFIG_FILE}: --train rebuilds the run from it")
    return validate(from_dict(load_toml(path), source=str(path)))


def check_trainable(cfg) -> None:
    """Refuse, before anything runs, the settings the C loop does not implement (a sparse spec it
    cannot express, or a layer it lacks, is refused when the rebuilt stage is lowered)."""
    t, r = cfg.train, cfg.replay
    if t.strategy not in ("latent-replay", "naive"):
        raise TinyclError(f"--train: strategy {t.strategy!r} has no C loop (latent-replay and naive do)")
    if r.bits == 32 or cfg.quant.frozen == "float":
        raise TinyclError("--train: the device runs the INT8 frozen stage with Q-bit latents (--bits 1..8)")
    if t.norm != "brn":
        raise TinyclError(f"--train: --norm {t.norm} has no training kernel; the C loop trains batch "
                          "renormalization (--norm brn)")


def loop_settings(cfg, batch_sizes: list[int], experiences: int, trace_experiences: int, test_images: int
                  ) -> LoopSettings:
    """The learner's settings as ``run_experiment`` builds its ``Learner``."""
    t, r = cfg.train, cfg.replay
    return LoopSettings(
        experiences=experiences, max_new=max(batch_sizes[:experiences]), minibatch=t.minibatch, epochs=t.epochs,
        capacity=0 if t.strategy == "naive" else r.replays, policy=r.policy, shuffle=t.shuffle,
        replay_order=t.replay_order, pad_first_batch=t.pad_first_batch, reset_sgd=t.reset_sgd,
        brn_inc_momentum=t.brn_inc_momentum if t.norm == "brn" else None, cwr=t.cwr, lr=t.lr, inc_lr=t.inc_lr,
        momentum=t.momentum, weight_decay=t.weight_decay, seed=cfg.seed, trace_experiences=trace_experiences,
        test_images=test_images)


def same_int_layer(a: IntConvLayer | IntBlock, b: IntConvLayer | IntBlock) -> bool:
    """Same integer parameters: every conv's weights, biases and multipliers, every add's."""
    convs_a = [u.conv for u in a.units] if isinstance(a, IntBlock) else [a]
    convs_b = [u.conv for u in b.units] if isinstance(b, IntBlock) else [b]
    adds = (getattr(a, "add", None), getattr(b, "add", None))
    return type(a) is type(b) and len(convs_a) == len(convs_b) and adds[0] == adds[1] and all(
        x.weight_s8.equal(y.weight_s8) and x.bias_s32.equal(y.bias_s32) and x.multiplier.equal(y.multiplier)
        for x, y in zip(convs_a, convs_b, strict=True))


def check_same_frozen_stage(run_dir: Path, dep: Deployment) -> None:
    """The rebuilt run's INT8 frozen stage must be the finished run's (its deployment.tcd), to
    the bit: otherwise config.toml does not describe that run (weights or data changed)."""
    path = Path(run_dir) / FILE_NAME
    if not path.is_file():
        return
    saved = load_deployment(path)
    same = len(saved.stage.layers) == len(dep.stage.layers) and all(
        same_int_layer(a, b) for a, b in zip(saved.stage.layers, dep.stage.layers, strict=True))
    if not same or saved.quantizer.bits != dep.quantizer.bits:
        raise TinyclError(f"{run_dir}/{CONFIG_FILE} does not rebuild the run's INT8 frozen stage (its {FILE_NAME} "
                          "differs): were the weights or the data changed since the run?")


def write_stream(root: Path, source, experiences: int, test_images: int) -> tuple[list[int], np.ndarray]:
    """The stream as the program reads it: stream/exp_NNNNN.bin per experience (camera frames
    and labels) and stream/test.bin; returns the frames per experience and the test labels."""
    from tinycl.export.verify import write_input_file

    folder = root / STREAM_DIR
    folder.mkdir(parents=True, exist_ok=True)
    sizes = []
    for index in range(experiences):
        images, labels = source.batch(index)
        images = np.ascontiguousarray(images, np.uint8)
        n, height, width, channels = images.shape
        with open(folder / f"exp_{index:05d}.bin", "wb") as fh:
            fh.write(b"TCE1" + struct.pack("<4I", n, height, width, channels))
            fh.write(np.asarray(labels, np.uint8).tobytes())
            fh.write(images.tobytes())
        sizes.append(n)
    frames, labels, have = [], [], 0
    for chunk_images, chunk_labels in source.test_chunks():
        if have >= test_images:
            break
        frames.append(chunk_images[: test_images - have])
        labels.append(chunk_labels[: test_images - have])
        have += len(frames[-1])
    test = np.ascontiguousarray(np.concatenate(frames)) if frames else np.zeros((0, *source.batch(0)[0].shape[1:]),
                                                                                  np.uint8)
    write_input_file(folder / "test.bin", test.astype(np.uint8))
    return sizes, np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)


def write_train_project(project: TrainProject, root: Path) -> None:
    write_project_files(root, project.files, (*HARNESS_FILES, *TRAIN_HARNESS))


def estimated_instructions(project: TrainProject, batch_sizes: list[int], test_images: int) -> float:
    """An upper estimate of the program's instructions (for a run's time limit): the plan of
    every experience with the memory as full as it could be, every step a full mini-batch."""
    from tinycl.train.learner import minibatch_plan

    s = project.settings
    step_macs = sum(r.macs for r in project.step_regions) * s.minibatch
    frame_macs = sum(r.macs for r in project.frame_regions)
    steps, seen = 0, 0
    for index, n in enumerate(batch_sizes[: s.experiences]):
        rows = n + (s.minibatch if s.pad_first_batch and index == 0 else 0)
        _, _, iterations = minibatch_plan(rows, min(s.capacity, seen) if index else 0, s.minibatch)
        steps += s.epochs * max(iterations, 1)
        seen += n
    frames = sum(batch_sizes[: s.experiences]) + test_images
    return INSTRUCTIONS_PER_MAC_BOUND * (steps * step_macs + frames * frame_macs) + 5e4 * steps


def export_train(run_dir: Path, out_dir: Path | None, target: str, verify: bool = False,
                 experiences: int | None = None, images: int | None = None) -> TrainExportResult:
    """Export the run's continual-learning loop for ``target`` into ``out_dir`` (default
    ``RUN_DIR/export-TARGET-train``); see the module doc."""
    from tinycl.export.measure import cost_side
    from tinycl.export.train_measure import instruction_report, kept_report, train_memory_report
    from tinycl.export.train_trace import trace_python_run
    from tinycl.train.experiment import load_data

    timings: dict[str, float] = {}
    start = time.perf_counter()
    spec = get_target(target)
    cfg = load_run_config(run_dir)
    check_trainable(cfg)
    if images is not None and images < 0:
        raise TinyclError(f"--images must be >= 0, got {images}")
    source = load_data(cfg).source
    total = source.num_batches
    count = total if experiences is None else experiences
    if not 1 <= count <= total:
        raise TinyclError(f"--experiences must be in 1..{total} (the run's stream), got {experiences}")
    whole = count == total
    test_images = min(source.test_images, images if images is not None else (source.test_images if whole
                                                                               else DEFAULT_IMAGES))
    if verify:
        require_tools(target, (HOST_CC,) if spec.emulator else ())
    t = time.perf_counter()
    if verify:
        trace = trace_python_run(cfg, count, 0 if whole else test_images,
                                 min_steps=MIN_STEPS if whole else 0, min_experiences=MIN_EXPERIENCES if whole else 0)
    else:
        trace = trace_python_run(cfg, 0, 0)
    timings["python_s"] = time.perf_counter() - t
    meta = {"model": cfg.model.name, "width": cfg.model.width, "lr_layer": cfg.model.lr_layer, "seed": cfg.seed,
            "recipe": cfg.train.recipe, "strategy": cfg.train.strategy}
    dep = Deployment(trace.int_stage, trace.quantizer, trace.inference_ops, (3, cfg.model.res, cfg.model.res),
                     trace.num_classes, None, None, meta).validate()
    check_same_frozen_stage(Path(run_dir), dep)
    settings = loop_settings(cfg, list(source.batch_sizes), count, trace.experiences if verify else 0, test_images)
    project = generate_train_project(dep, trace.stage, settings)
    check_fits(project.buffers, project.constants, target, project.external)
    cost = cost_side(dep, replays=settings.capacity, new_images=settings.max_new)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / f"export-{target}-train"
    write_train_project(project, out)
    t = time.perf_counter()
    frames_per_experience, test_labels = write_stream(out, source, count, test_images)
    timings["stream_s"] = time.perf_counter() - t
    report = {"target": target, "target_description": spec.description, "run_dir": str(run_dir), "project": str(out),
              "experiences": count, "stream_experiences": total, "settings": settings.__dict__,
              "kept_for_backward": kept_report(project), "memory": train_memory_report(project, cost, target)}
    result = TrainExportResult(target, out, project, report, timings_s=timings)
    if not verify:
        timings["total_s"] = time.perf_counter() - start
        write_json(out / REPORT_FILE, finite(report))
        return result

    t = time.perf_counter()
    build_project(out, target)
    if spec.emulator:
        build_plugin(out)
    timings["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    speed = QEMU_INSTRUCTIONS_PER_S if spec.emulator else 10 * QEMU_INSTRUCTIONS_PER_S
    timeout = 120 + 10 * estimated_instructions(project, list(source.batch_sizes), test_images) / speed
    output = out / f"tinycl_train_out_{target}.bin"
    output.unlink(missing_ok=True)
    run_binary(out, target, timeout, count_instructions=bool(spec.emulator))
    timings["run_s"] = time.perf_counter() - t
    random_counts = [trace.stage.ops[j].selection.count for j in trace.stage.random_layers]
    c = read_train_output(output, random_counts)
    checks = compare_traces(c, trace, project)
    if whole:
        run_summary, want_predictions, want_logits = final_run_predictions(Path(run_dir), trace, test_images)
        run_accuracy = run_summary.get("final_accuracy")
    else:
        want_predictions, want_logits, run_accuracy = trace.test_predictions, trace.test_logits, None
    predictions = compare_predictions(c.test_predictions, c.test_logits, want_predictions, want_logits, test_labels,
                                      run_accuracy) if want_predictions is not None and test_images else None
    symbols = elf_symbols(out, target) if spec.emulator else None
    sections = elf_sections(out, target) if spec.emulator else None
    report["memory"] = train_memory_report(project, cost, target, symbols, sections, c.stack_bytes)
    if spec.emulator:
        total_insns, marks = read_counts(out, target)
        report["instructions"] = instruction_report(project, c, frames_per_experience, test_images, total_insns,
                                                    marks, target)
        report["instructions"]["counter"] = "tools/tinycl_insn_count.c (QEMU TCG plugin), " + tool_version(
            spec.emulator[0])
    report["compiler"] = tool_version(spec.compiler)
    timings["total_s"] = time.perf_counter() - start
    ok = checks["ok"] and c.done and (predictions is None or predictions["ok"])
    verify_data = {
        "target": target, "target_description": spec.description, "run_dir": str(run_dir), "experiences": count,
        "whole_stream": whole, "steps": len(c.steps), "ok": bool(ok), "checks": checks, "test_predictions": predictions,
        "compiler": report["compiler"], "emulator": tool_version(spec.emulator[0]) if spec.emulator else None,
        "timings_s": timings,
        "python_reference": "tinycl.train.experiment.run_experiment rebuilt from config.toml, its LatentEncoder and "
                            "Learner recorded by subclasses (tinycl.export.train_trace)"
                            + ("; final predictions: the finished run's deployment.tcd" if whole else ""),
    }
    write_json(out / VERIFY_FILE, finite(verify_data))
    report["verify"] = {"ok": bool(ok), "file": VERIFY_FILE}
    write_json(out / REPORT_FILE, finite(report))
    result.verify = verify_data
    return result


def final_run_predictions(run_dir: Path, trace, images: int) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """The finished run's summary and its final adaptive stage's predictions and logits on the
    first test latents (deployment.tcd's ops on the run's own test latents)."""
    import torch

    from tinycl.export.reference import adaptive_fp32_fw
    from tinycl.export.rundir import read_summary

    summary = read_summary(run_dir)
    path = run_dir / FILE_NAME
    if not path.is_file() or trace.test_latents is None:
        return summary, None, None
    dep = load_deployment(path)
    logits = adaptive_fp32_fw(dep.adaptive, torch.as_tensor(trace.test_latents[:images])).numpy()
    return summary, logits.argmax(axis=1), logits.astype(np.float32)


def train_verdict(result: TrainExportResult) -> str:
    v = result.verify
    assert v is not None
    c = v["checks"]
    facts = [f"{v['experiences']} experiences, {v['steps']} steps"]
    draws = all(c[k] for k in ("lr_codes_identical", "permutations_identical", "replay_slots_identical",
                               "batch_labels_identical", "random_channels_identical", "memory_writes_identical",
                               "memory_contents_identical"))
    facts.append(f"LR codes, draws, replay slots and memory {'identical' if draws else 'DIFFER'} over "
                 f"{c['experiences_compared']} experiences / {c['steps_compared']} steps")
    facts.append(f"loss max rel. error {c['loss_max_rel_error_first_100_steps']:.1e} over the first "
                 f"{min(100, c['steps_compared'])} steps")
    facts.append(f"weights max rel. error {c['weights_max_rel_error_first_3_experiences']:.1e} after experiences "
                 f"{c['weights_experiences']}")
    p = v["test_predictions"]
    if p:
        acc = f"accuracy {100 * p['device_accuracy']:.2f}%"
        if p.get("run_final_accuracy") is not None:
            acc += f" (run {100 * p['run_final_accuracy']:.2f}%)"
        facts.append(f"{100 * p['identical_fraction']:.1f}% of {p['images']} test predictions identical, {acc}")
    status = "passed" if result.ok else "FAILED"
    return f"train verify on {result.target} {status}: " + ", ".join(facts)
