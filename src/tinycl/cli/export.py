"""``tinycl export``: a finished run as a C99 project for the host, a Cortex-M4F or an RV32 MCU;
``--verify`` builds and runs it (QEMU for the MCUs) and compares it with Python. ``--train``
exports the whole continual-learning loop instead (the device learns the run's stream)."""

from __future__ import annotations

from pathlib import Path

import click

# The export package imports torch; its constants are repeated here so that --help needs no
# torch (tests/cli/test_help.py checks them against tinycl.export.driver / .toolchains).
EXPORT_TARGETS = ("host", "cortex-m4", "rv32")
DEFAULT_IMAGES = 256


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="project folder  [default: RUN_DIR/export-TARGET]")
@click.option("--target", default="host", show_default=True, help=f"build target: {' | '.join(EXPORT_TARGETS)}")
@click.option("--verify", is_flag=True,
              help="build, run (QEMU for MCUs, counting instructions) and compare with Python on test images  "
                   "[default: off]")
@click.option("--images", type=int, default=None,
              help="test images of the run's benchmark fed to --verify (the first N)  "
                   f"[default: {DEFAULT_IMAGES}; with --train after the whole stream: all]")
@click.option("--train", is_flag=True,
              help="export the on-device learning loop (INT8 frozen stage, Q-bit replays, FP32 training, memory "
                   "update) rebuilt from RUN_DIR/config.toml; --verify replays the run's stream in C  [default: off]")
@click.option("--experiences", type=int, default=None,
              help="with --train: learn the first K experiences of the stream  [default: all]")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads for PyTorch in the Python side of --verify")
def export(run_dir: Path, out_dir: Path | None, target: str, verify: bool, images: int | None, train: bool,
           experiences: int | None, threads: int) -> None:
    """Write RUN_DIR's deployment (INT8 frozen stage, Q-bit latents, adaptive stage, replay
    memory) as a self-contained C99 project; with --verify, check it against Python. With
    --train, the project learns instead: the run's stream, one experience at a time."""
    import torch

    from tinycl.errors import TinyclError
    from tinycl.export.driver import REPORT_FILE, VERIFY_FILE, export_run, verdict_line
    from tinycl.export.measure import kernel_table, memory_table

    torch.set_num_threads(threads)  # as tinycl run: small integer convs lose to thread oversubscription
    if train:
        export_train_command(run_dir, out_dir, target, verify, images, experiences)
        return
    if experiences is not None:
        raise TinyclError("--experiences needs --train")
    result = export_run(run_dir, out_dir, target, verify, DEFAULT_IMAGES if images is None else images)
    root = result.project.root
    memory = result.report["memory"]
    print(f"wrote {root}: C99 project for {result.report['target_description']} "
          f"(make -f Makefile.{target} run); static memory vs the cost model:")
    for line in memory_table(memory):
        print(f"  {line}")
    instructions = result.report.get("instructions")
    if instructions:
        per_frame = instructions["per_frame"]
        print(f"instructions per image on {target}: {per_frame['instructions']:,.0f} "
              f"(frozen {per_frame['frozen_instructions']:,.0f} for {per_frame['frozen_macs']:,} MACs, "
              f"adaptive {per_frame['adaptive_instructions']:,.0f} for {per_frame['adaptive_macs']:,} MACs), "
              f"mean of {instructions['frames']} images:")
        for line in kernel_table(instructions):
            print(f"  {line}")
    print(f"report: {root / REPORT_FILE}")
    if result.verify is not None:
        print(f"tinycl export: {verdict_line(result)} -> {root / VERIFY_FILE}")
        if not result.ok:
            raise SystemExit(1)


def export_train_command(run_dir: Path, out_dir: Path | None, target: str, verify: bool, images: int | None,
                         experiences: int | None) -> None:
    from tinycl.export.train_driver import REPORT_FILE as TRAIN_REPORT
    from tinycl.export.train_driver import VERIFY_FILE as TRAIN_VERIFY
    from tinycl.export.train_driver import export_train, train_verdict
    from tinycl.export.train_measure import phase_table

    result = export_train(run_dir, out_dir, target, verify, experiences, images)
    report, root = result.report, result.root
    totals = report["memory"]["totals"]
    print(f"wrote {root}: the continual-learning loop in C99 for {report['target_description']} "
          f"(make -f Makefile.{target} run learns the {report['experiences']} experiences in {root / 'stream'})")
    print(f"  static RAM {totals['generator_ram_bytes']:,} B + external RAM "
          f"{totals['generator_external_ram_bytes']:,} B "
          f"(kept for backward {report['memory']['kept_for_backward_bytes']:,} B), cost model "
          f"{totals['cost_model_bytes']:,} B")
    for row in report["kept_for_backward"]:
        print(f"  layer {row['layer']:>3}: kept for backward {row['kept_bytes']:>12,} B "
              f"(dense {row['dense_kept_bytes']:,} B)")
    if "peak_ram_measured_bytes" in totals:
        print(f"  peak RAM measured {totals['peak_ram_measured_bytes']:,} B (static {totals['static_ram_bytes_elf']:,} "
              f"+ stack high-water {totals['stack_high_water_bytes']:,})")
    instructions = report.get("instructions")
    if instructions:
        step = instructions["per_step"]
        print(f"instructions per training step on {target} (batch {instructions['batch']:.0f}): "
              f"{step['instructions']:,.0f}")
        for line in phase_table(instructions):
            print(f"  {line}")
        clock = instructions.get("time_at_clock")
        if clock:
            print(f"  at {clock['clock_hz'] / 1e6:g} MHz, cycles = instructions (assumption): "
                  f"{clock['seconds_per_minibatch']:.3f} s per mini-batch, "
                  f"{clock['seconds_per_experience_mean_after_batch_0']:.1f} s per experience")
    print(f"report: {root / TRAIN_REPORT}")
    if result.verify is not None:
        print(f"tinycl export: {train_verdict(result)} -> {root / TRAIN_VERIFY}")
        if not result.ok:
            raise SystemExit(1)
