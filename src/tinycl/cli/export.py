"""``tinycl export``: a finished run as a C99 project for the host, a Cortex-M4F or an RV32 MCU;
``--verify`` builds and runs it (QEMU for the MCUs) and compares it with Python."""

from __future__ import annotations

from pathlib import Path

import click

from tinycl.export.driver import DEFAULT_IMAGES, REPORT_FILE, VERIFY_FILE, export_run, verdict_line
from tinycl.export.measure import kernel_table, memory_table
from tinycl.export.toolchains import TARGETS


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="project folder [RUN_DIR/export-TARGET]")
@click.option("--target", default="host", show_default=True, help=f"build target: {' | '.join(TARGETS)}")
@click.option("--verify", is_flag=True,
              help="build, run (QEMU for MCUs, counting instructions) and compare with Python on test images")
@click.option("--images", type=int, default=DEFAULT_IMAGES, show_default=True,
              help="test images of the run's benchmark fed to --verify (the first N)")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads for PyTorch in the Python side of --verify")
def export(run_dir: Path, out_dir: Path | None, target: str, verify: bool, images: int, threads: int) -> None:
    """Write RUN_DIR's deployment (INT8 frozen stage, Q-bit latents, adaptive stage, replay
    memory) as a self-contained C99 project; with --verify, check it against Python."""
    import torch

    torch.set_num_threads(threads)  # as tinycl run: small integer convs lose to thread oversubscription
    result = export_run(run_dir, out_dir, target, verify, images)
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
