"""On-device learning measured side by side (issue 17).

1. Host: the exported C training step (``tinycl_train_step``, -O2, one core) against PyTorch's
   (the learner's step on the same initial adaptive stage: forward, CrossEntropyLoss, backward,
   ChannelSGD; one thread), samples per second on the same mini-batch of the run's latents.
2. Instructions per training step on Cortex-M4F and RV32 (QEMU 7.2, the counting plugin), dense
   and each sparse setting, by phase; seconds per mini-batch at the measured targets' assumed
   80 MHz with cycles = instructions (an assumption: an M4 takes 1.2-1.6 cycles per
   instruction on such loops, REFERENCES.md).
3. Memory: bytes kept for backward, static RAM (the ELF's) + the measured stack high-water
   mark, against ``tinycl cost``'s memory model.

    python benchmarks/bench_export_train.py [--run-dir RUN] [--experiences 1] [--quick] [--targets cortex-m4,rv32]

Without ``--run-dir`` it learns the default configuration (MobileNetV1 x0.25, 64 px, LR layer
19, mini-batch 128, 8-bit LRs) from a config.toml alone (the first experience: 4 full steps,
~3 min per QEMU run). ``--quick``: the tests' tiny configuration (32 px, mini-batch 32).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tinycl.config import RunConfig, dump_toml
from tinycl.export.host_train_kernels import HostTrainStep, build_train_library
from tinycl.export.train_driver import export_train, load_run_config
from tinycl.export.train_trace import trace_python_run
from tinycl.export.train_verify import read_train_output
from tinycl.quant.packing import unpack_bits

WEIGHTS = Path(__file__).resolve().parents[1] / "src/tinycl/weights/mobilenet_v1_w0.25_r64_c7c2f48790a6.pt"
ADAPTIVE = ("20", "21", "22", "23", "24", "25", "26", "head")
# Paissan et al. (CVPRW 2024) update a fraction of the channels of the last blocks; tiny-training
# (NeurIPS 2022) chooses them once by weight norm, or updates biases only.
SETTINGS = {
    "dense": {},
    "random 25%": {"sparse": ",".join(f"{k}=0.25" for k in ADAPTIVE), "sparse_policy": "random"},
    "top-k 25%": {"sparse": ",".join(f"{k}=0.25" for k in ADAPTIVE), "sparse_policy": "topk"},
    "bias-only pw": {"sparse": "20=bias,22=bias,24=bias,26=bias", "sparse_policy": "random"},
}


def config_dirs(base: RunConfig, root: Path) -> dict[str, Path]:
    out = {}
    for name, train in SETTINGS.items():
        cfg = copy.deepcopy(base)
        for key, value in train.items():
            setattr(cfg.train, key, value)
        folder = root / name.replace(" ", "_").replace("%", "")
        folder.mkdir(parents=True, exist_ok=True)
        cfg.out = str(folder)
        (folder / "config.toml").write_text(dump_toml(cfg))
        out[name] = folder
    return out


def first_batch(project_root: Path, bits: int, values: int, minibatch: int) -> tuple[np.ndarray, np.ndarray]:
    """The first experience's codes and labels as the host program encoded them (its CODE record)."""
    c = read_train_output(project_root / "tinycl_train_out_host.bin", [])
    labels, rows = c.codes[0]
    codes = unpack_bits(rows, bits, values)
    return codes[:minibatch], labels[:minibatch]


def best_time(step, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after one warm-up: the machine is shared, and the
    fastest run is the one least disturbed."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def time_c_step(project_root: Path, codes: np.ndarray, labels: np.ndarray, lr: float, repeats: int) -> float:
    step = HostTrainStep(build_train_library(project_root))
    return best_time(lambda: step.step(codes, labels, lr), repeats)


def time_torch_step(cfg, codes: np.ndarray, labels: np.ndarray, repeats: int) -> float:
    """The learner's step (tinycl.train.learner.Learner.fit's body) on the initial stage."""
    from tinycl.train.learner import channels_last
    from tinycl.train.optim import make_optimizer
    from tinycl.train.stages import set_train_mode

    trace = trace_python_run(cfg, 0, 0)
    model = trace.adaptive.to(memory_format=torch.channels_last)
    set_train_mode(model, cfg.train.norm)
    optimizer = make_optimizer(model, lr=cfg.train.lr, momentum=cfg.train.momentum,
                               weight_decay=cfg.train.weight_decay)
    latents = torch.from_numpy(trace.quantizer.decode(codes.reshape(len(codes), *trace.latent_shape)))
    x, y = channels_last(latents), torch.from_numpy(labels.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return best_time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=None, help="a run directory (its config.toml is used)")
    parser.add_argument("--experiences", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="32 px, mini-batch 32 (the tests' configuration)")
    parser.add_argument("--targets", default="cortex-m4,rv32")
    parser.add_argument("--repeats", type=int, default=5, help="timed host steps per side")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_export_train_"))
    if args.run_dir is not None:
        base = load_run_config(args.run_dir)
    else:
        base = RunConfig()
        if args.quick:
            base.model.res, base.model.weights = 32, str(WEIGHTS)
            base.data.frames, base.train.epochs, base.train.minibatch, base.replay.replays = 2, 2, 32, 40
    dirs = config_dirs(base, work / "configs")
    targets = [t for t in args.targets.split(",") if t]
    print(f"configuration: {base.model.name} x{base.model.width:g}, {base.model.res} px, LR layer "
          f"{base.model.lr_layer}, mini-batch {base.train.minibatch}, Q = {base.replay.bits}; "
          f"{args.experiences} experience(s) learned; work folder {work}")

    # 1. host: C step vs PyTorch step
    print("\n1. host training step, one core (samples/s, the same mini-batch of the run's latents; best of "
          f"{args.repeats} steps)")
    print(f"{'setting':<14} {'C (s/step)':>11} {'C samples/s':>12} {'PyTorch (s/step)':>17} {'PyTorch samples/s':>18} "
          f"{'C / PyTorch':>12}")
    host = {}
    for name, folder in dirs.items():
        result = export_train(folder, work / f"host-{folder.name}", "host", True, args.experiences, 0)
        host[name] = result
        assert result.ok, result.verify
        cfg = load_run_config(folder)
        lr_values = result.project.stage.latent_shape[0] * result.project.stage.latent_shape[1] * \
            result.project.stage.latent_shape[2]
        codes, labels = first_batch(result.root, base.replay.bits, lr_values, base.train.minibatch)
        c_s = time_c_step(result.root, codes, labels, cfg.train.lr, args.repeats)
        torch_s = time_torch_step(cfg, codes, labels, args.repeats)
        batch = len(labels)
        print(f"{name:<14} {c_s:>11.4f} {batch / c_s:>12.1f} {torch_s:>17.4f} {batch / torch_s:>18.1f} "
              f"{torch_s / c_s:>11.2f}x")

    # 2. instructions per step, dense vs sparse, per target
    reports = {}
    for target in targets:
        print(f"\n2. {target}: instructions per training step (mean of full mini-batches), by phase")
        print(f"{'setting':<14} {'total':>14} {'forward':>13} {'weight grad':>13} {'input grad':>13} "
              f"{'update':>11} {'backward+update vs dense':>25} {'s/mini-batch':>13}")
        dense_backward = None
        for name, folder in dirs.items():
            result = export_train(folder, work / f"{target}-{folder.name}", target, True, args.experiences, 0)
            assert result.ok, result.verify
            reports[(target, name)] = result.report
            counts = result.report["instructions"]
            phases = counts["per_step"]["phases"]
            backward = phases["weight_grad"] + phases["input_grad"] + phases["update"]
            dense_backward = dense_backward or backward
            clock = counts["time_at_clock"]
            print(f"{name:<14} {counts['per_step']['instructions']:>14,.0f} {phases['forward']:>13,.0f} "
                  f"{phases['weight_grad']:>13,.0f} {phases['input_grad']:>13,.0f} {phases['update']:>11,.0f} "
                  f"{dense_backward / backward:>24.2f}x {clock['seconds_per_minibatch']:>13.2f}")
        print(f"   ({clock['assumption'].split(' (')[0]}, {clock['clock_hz'] / 1e6:g} MHz; per frame, INT8 frozen "
              f"stage: {counts['per_frame_instructions']:,.0f} instructions = "
              f"{clock['seconds_per_frame_frozen_stage']:.3f} s)")

    # 3. memory
    print("\n3. memory (bytes): kept for backward, static RAM (ELF) + stack high-water mark, vs the cost model")
    print(f"{'target':<10} {'setting':<14} {'kept for bw':>12} {'vs dense':>9} {'internal':>11} {'external':>11} "
          f"{'stack':>7} {'peak':>12} {'cost model':>12}")
    for (target, name), report in reports.items():
        memory = report["memory"]
        totals = memory["totals"]
        kept = memory["kept_for_backward_bytes"]
        dense_kept = reports[(target, "dense")]["memory"]["kept_for_backward_bytes"]
        external = totals.get("external_ram_bytes_elf", 0)
        print(f"{target:<10} {name:<14} {kept:>12,} {dense_kept / kept:>8.2f}x "
              f"{totals['static_ram_bytes_elf'] - external:>11,} {external:>11,} "
              f"{totals['stack_high_water_bytes']:>7,} {totals['peak_ram_measured_bytes']:>12,} "
              f"{totals['cost_model_bytes']:>12,}")
    print("   (with batch renormalization both the device and the cost model keep the whole mini-batch's "
          "activations; train_report.json explains each term)")


if __name__ == "__main__":
    main()
