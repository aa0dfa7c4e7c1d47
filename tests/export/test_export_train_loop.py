"""``tinycl export RUN_DIR --train --verify``: the continual-learning loop in C against the Python
run, draw for draw, on tiny configurations (MobileNetV1 x0.25 with the shipped weights at 32 px,
2 frames per video, mini-batch 32, 2 epochs, 40 replays): LR codes, permutations, replay slots,
random channels and memory writes identical; per-step loss within 1e-4 and adaptive weights
within 1e-3 after 3 experiences; the same bits on host, Cortex-M4F and RV32; bytes kept for
backward shrinking with the sparse update; every refusal one line, exit 2, nothing written.

Times measured here (2 shared cores, background load): ~8 s per host verification (the Python
rebuild dominates), ~15 s per QEMU one; ~2 min for the module."""

import json
from pathlib import Path

import numpy as np
import pytest

from tinycl.config import RunConfig, apply_recipe, dump_toml

WEIGHTS = Path(__file__).resolve().parents[2] / "src/tinycl/weights/mobilenet_v1_w0.25_r64_c7c2f48790a6.pt"
V2_WEIGHTS = Path(__file__).resolve().parents[2] / "src/tinycl/weights/mobilenet_v2_w0.25_r64_c1fa1d5f47fa.pt"
EXPERIENCES = 3
CONFIGS = {
    # tinycl's recipe, dense: recipe memory, shuffled per epoch, var statistics
    "dense": {},
    # ar1-pytorch's AR1*: std statistics with the r/d ramp, CWR*, padded batch 0, replays in
    # memory order, SGD reset at batch 1, inc_lr, batch renorm's incremental phase, ar1 memory
    "ar1star": {"recipe": "ar1star"},
    # random channels per step (conv, depthwise, head), a bias-only conv, reservoir memory, Q = 7
    "sparse_random": {"train.sparse": "20=bias,21=0.5,22=0.25,26=0.5,head=0.5", "replay.policy": "reservoir",
                      "replay.bits": 7},
    # top-k channels chosen once, class-balanced memory, 6-bit latents clipped per channel
    "sparse_topk": {"train.sparse": "22=0.25,24=0.5,head=0.25", "train.sparse_policy": "topk",
                    "replay.policy": "class-balanced", "replay.bits": 6, "quant.latent_mode": "clip",
                    "quant.latent_per_channel": True},
    # fixed channel lists, no replay at all
    "fixed_naive": {"train.sparse": "20=channels:0/3/5/90,26=channels:1/2/200", "train.strategy": "naive"},
    # MobileNetV2 at its default LR layer: an INT8 frozen stage of residual blocks with a signed
    # LR layer (offset-binary codes), block 17's ReLU6 chain trained in C, a random half of its
    # channels and a quarter of the 1280-channel conv's
    "mobilenet_v2": {"model.name": "mobilenet_v2", "model.lr_layer": 16, "model.weights": str(V2_WEIGHTS),
                     "train.sparse": "17=0.5,18=0.25"},
}


def tiny_config(folder: Path, recipe: str = "tinycl", **settings) -> Path:
    cfg = apply_recipe(RunConfig(), recipe)
    cfg.model.res, cfg.model.weights = 32, str(WEIGHTS)
    cfg.data.frames, cfg.train.epochs, cfg.train.minibatch, cfg.replay.replays = 2, 2, 32, 40
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    cfg.out = str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(dump_toml(cfg))
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("train_cache")


@pytest.fixture(autouse=True)
def same_cache(cache, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(cache))


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_configs")
    out = {}
    for name, settings in CONFIGS.items():
        settings = dict(settings)
        recipe = settings.pop("recipe", "tinycl")
        out[name] = tiny_config(root / name, recipe, **settings)
    return out


@pytest.fixture(scope="module")
def verified(configs, cache, tmp_path_factory, tinycl_cli):
    """(config, target) -> (exit code, stdout, stderr, project folder); each verified once."""
    results = {}

    def verify(name: str, target: str, *extra):
        key = (name, target, extra)
        if key not in results:
            out = tmp_path_factory.mktemp(f"{name}-{target}")
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("TINYCL_CACHE", str(cache))
                results[key] = (*tinycl_cli("export", configs[name], "--train", "--verify", "--target", target,
                                            "--experiences", EXPERIENCES, "--images", 32, "--out", out, *extra), out)
        return results[key]

    return verify


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_verified(result, target: str) -> dict:
    code, out, err, root = result
    assert code == 0, err + out
    verdict = [line for line in out.splitlines() if line.startswith("tinycl export: train verify")]
    assert len(verdict) == 1 and f"train verify on {target} passed" in verdict[0]
    data = read_json(root / "train_verify.json")
    checks = data["checks"]
    assert data["ok"] and checks["ok"] and checks["experiences_compared"] == EXPERIENCES
    for name in ("lr_codes_identical", "permutations_identical", "replay_slots_identical", "batch_labels_identical",
                 "random_channels_identical", "memory_writes_identical", "memory_contents_identical"):
        assert checks[name], name
    assert checks["loss_max_rel_error_first_100_steps"] <= 1e-4
    assert checks["weights_experiences"] == [0, 1, 2] and checks["weights_max_rel_error_first_3_experiences"] <= 1e-3
    assert data["test_predictions"]["identical_fraction"] >= 0.98
    return data


@pytest.mark.parametrize("name", list(CONFIGS))
def test_host_repeats_the_python_run(verified, require_toolchain, name):
    require_toolchain("host")
    data = assert_verified(verified(name, "host"), "host")
    assert data["checks"]["steps_compared"] == data["steps"] >= 2 * EXPERIENCES  # every step compared


def test_the_draws_are_really_compared(verified, require_toolchain):
    """Random channels are drawn and compared on the sparse run, replays from batch 1 on."""
    require_toolchain("host")
    _, _, _, root = verified("sparse_random", "host")
    from tinycl.export.train_verify import read_train_output

    c = read_train_output(root / "tinycl_train_out_host.bin", [64, 32, 128, 128])
    assert all(len(s.channels) == 4 for s in c.steps)
    assert len({tuple(s.channels[1]) for s in c.steps}) == len(c.steps)  # a new choice every step
    assert all(s.replays > 0 for s in c.steps if s.experience > 0) and len(c.permutations) >= 2 * EXPERIENCES


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
@pytest.mark.parametrize("name", ["dense", "sparse_random", "mobilenet_v2"])
def test_emulated_targets_give_the_hosts_bits(verified, require_toolchain, name, target):
    require_toolchain("host")
    require_toolchain(target)
    assert_verified(verified(name, target), target)
    from tinycl.export.train_verify import read_train_output

    counts = {"sparse_random": [64, 32, 128, 128], "mobilenet_v2": [20, 120, 120, 20]}.get(name, [])
    host = read_train_output(verified(name, "host")[3] / "tinycl_train_out_host.bin", counts)
    device = read_train_output(verified(name, target)[3] / f"tinycl_train_out_{target}.bin", counts)
    # FP32 bit for bit: -ffp-contract=off, the same operation order on every target
    assert [s.loss for s in device.steps] == [s.loss for s in host.steps]
    assert device.params == host.params
    assert device.test_logits.tobytes() == host.test_logits.tobytes()
    assert 0 < device.stack_bytes < 16 * 1024  # measured by stack painting


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
def test_instructions_per_layer_and_phase(verified, require_toolchain, target):
    require_toolchain(target)
    _, out, _, root = verified("dense", target)
    report = read_json(root / "train_report.json")
    counts = report["instructions"]
    layers = {row["layer"]: row for row in counts["layers"]}
    assert sorted(layers) == list(range(20, 29))  # 20..26 convs, 27 pool, 28 head
    for layer in (20, 22, 24, 26):  # pointwise: every phase counted
        assert min(layers[layer]["forward"], layers[layer]["weight_grad"], layers[layer]["update"]) > 0
    assert layers[20]["input_grad"] > 0 and layers[22]["input_grad"] > layers[20]["input_grad"]  # 20: BN's only
    phases = counts["per_step"]["phases"]
    assert {"forward", "weight_grad", "input_grad", "update", "loss", "loop"} == set(phases)
    kernels = {(k["kernel"], k["phase"]): k for k in counts["kernels"]}
    for key in (("pointwise_fp32_fw", "forward"), ("pointwise_fp32_wg", "weight_grad"),
                ("pointwise_fp32_ig", "input_grad"), ("linear_fp32_wg", "weight_grad")):
        assert 2 < kernels[key]["instructions_per_mac"] < 25, key
    clock = counts["time_at_clock"]
    assert clock["clock_hz"] == 80e6 and "cycles = instructions" in clock["assumption"]
    assert clock["seconds_per_minibatch"] == pytest.approx(counts["per_step"]["instructions"] / 80e6)
    memory = report["memory"]["totals"]
    assert memory["peak_ram_measured_bytes"] == memory["static_ram_bytes_elf"] + memory["stack_high_water_bytes"]
    assert not report["memory"]["sizes_mismatching_elf"]  # every buffer sized by the generator
    assert "instructions per training step" in out


def test_sparse_update_keeps_fewer_bytes(verified, require_toolchain):
    """The channel-sparse layers keep only their chosen input channels for backward; bias-only
    keeps none; the total really shrinks (the same layers, dense, keep all)."""
    require_toolchain("host")
    dense = {r["layer"]: r for r in read_json(verified("dense", "host")[3] / "train_report.json")["kept_for_backward"]}
    sparse_report = read_json(verified("sparse_random", "host")[3] / "train_report.json")
    sparse = {r["layer"]: r for r in sparse_report["kept_for_backward"]}
    for layer in (21, 22, 26, 28):
        assert sparse[layer]["kept_bytes"] < dense[layer]["kept_bytes"] == sparse[layer]["dense_kept_bytes"]
    # layer 22 keeps a quarter of its 128 input channels: 32 of 128 x 2 x 2 values per sample
    inputs = [p for p in sparse[22]["parts"] if "input" in p["what"]]
    assert inputs[0]["channels"] == 32 and inputs[0]["bytes"] == 4 * 32 * 32 * 2 * 2
    # batch renorm's inputs and the ReLU masks stay whole: 632,320 -> 517,632 B here (1.22x)
    assert sum(r["kept_bytes"] for r in sparse.values()) < 0.9 * sum(r["kept_bytes"] for r in dense.values())
    assert sparse_report["memory"]["kept_for_backward_bytes"] == sum(r["kept_bytes"] for r in sparse.values())


def test_generated_project_without_verify(configs, tmp_path, tinycl_cli, require_toolchain):
    require_toolchain("host")
    out = tmp_path / "project"
    code, stdout, err = tinycl_cli("export", configs["dense"], "--train", "--experiences", 2, "--out", out)
    assert code == 0, err
    for name in ("tinycl_train.c", "tinycl_train.h", "tinycl_train_data.c", "harness/train_main.c",
                 "runtime/batch_renorm_fp32_ig.c", "Makefile.cortex-m4", "stream/exp_00000.bin",
                 "stream/exp_00001.bin", "stream/test.bin", "train_report.json"):
        assert (out / name).is_file(), name
    assert not (out / "stream/exp_00002.bin").exists()  # one file per experience learned, no more
    header = (out / "tinycl_train.h").read_text()
    assert "#define TINYCL_TRAIN_EXPERIENCES 2" in header and "#define TINYCL_TRAIN_MINIBATCH 32" in header
    assert "wrote" in stdout and "kept for backward" in stdout


def refused(tinycl_cli, folder: Path, out: Path, *extra) -> str:
    code, stdout, err = tinycl_cli("export", folder, "--train", "--out", out, *extra)
    assert code == 2, (code, stdout, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tinycl: error: "), err
    assert not out.exists()  # nothing generated
    return lines[0]


@pytest.mark.parametrize("settings, message", [
    ({"train.norm": "bn"}, "--norm bn has no training kernel"),
    ({"train.strategy": "joint"}, "strategy 'joint' has no C loop"),
    ({"replay.bits": 32}, "Q-bit latents"),
])
def test_settings_the_loop_lacks_are_one_line(tmp_path, tinycl_cli, settings, message):
    folder = tiny_config(tmp_path / "run", **settings)
    assert message in refused(tinycl_cli, folder, tmp_path / "out")


def test_memory_over_the_targets_ram_is_one_line(tmp_path, tinycl_cli):
    """Mini-batch 1024 at 32 px keeps ~20 MB for backward: more than the 16 MB of external RAM
    (the AN386's PSRAM) the Cortex-M4F build puts the training buffers in."""
    folder = tiny_config(tmp_path / "run", **{"train.minibatch": 1024})
    line = refused(tinycl_cli, folder, tmp_path / "out", "--target", "cortex-m4")
    assert "does not fit Cortex-M4F" in line and "EXTERNAL RAM" in line


def test_a_layer_the_runtime_lacks_is_one_line(tmp_path, tinycl_cli, monkeypatch):
    """A model whose adaptive stage has an activation with no training kernel (Hardswish, in a
    MobileNetV1 registered for this test only) is refused after its rebuild, before writing."""
    from torch import nn

    from tinycl.models import registry
    from tinycl.models.mobilenet_v1 import MobileNetV1

    def builder(num_classes: int = 50, width: float = 1.0, **kwargs):
        model = MobileNetV1(num_classes=num_classes, width=width, **kwargs)
        model.features[24][2] = nn.Hardswish()  # layer 24, in the adaptive stage past LR layer 19
        return model

    monkeypatch.setitem(registry._REGISTRY, "test_v1_hardswish", builder)
    folder = tiny_config(tmp_path / "run", **{"model.name": "test_v1_hardswish"})
    line = refused(tinycl_cli, folder, tmp_path / "out")
    assert "adaptive.4.2: Hardswish has no training kernel in the C runtime" in line


def test_output_channel_selection_cannot_be_expressed():
    """The Python sparse update can select output channels (dim 'out'); the C loop cannot."""
    from tinycl.errors import TinyclError
    from tinycl.export.train_lower import lower_trainable
    from tinycl.models import create_model
    from tinycl.train.sparse import SparseUpdateConfig, sparsify
    from tinycl.train.stages import prepare_stages

    _, adaptive = prepare_stages(create_model("mobilenet_v1", width=0.25, num_classes=10), 19, "brn")
    sparsify(adaptive, SparseUpdateConfig(ratios={"22": 0.5}, dim="out"), first_index=20)
    with pytest.raises(TinyclError, match="output channels"):
        lower_trainable(adaptive, (128, 2, 2), 20, 10)


def test_lowering_reads_the_selectors():
    from tinycl.export.train_lower import TrainConv, TrainLinear, lower_trainable
    from tinycl.models import create_model
    from tinycl.train.sparse import SparseUpdateConfig, sparsify
    from tinycl.train.stages import prepare_stages

    _, adaptive = prepare_stages(create_model("mobilenet_v1", width=0.25, num_classes=10), 19, "brn")
    sparsify(adaptive, SparseUpdateConfig(ratios={"21": 0.5, "28": 0.25}, bias_only=("24",)), first_index=20)
    stage = lower_trainable(adaptive, (128, 2, 2), 20, 10)
    layers = {op.layer: op for op in stage.ops if isinstance(op, (TrainConv, TrainLinear))}
    assert layers[21].selection.policy == "random" and layers[21].selection.count == 64
    assert layers[24].selection.policy == "bias" and not layers[24].selection.weight_grad
    assert layers[28].selection.count == 64 and layers[20].selection.policy == "dense"
    assert [stage.ops[j].layer for j in stage.random_layers] == [21, 28]
    assert not stage.needs_input_grad(0) and stage.needs_input_grad(1)  # input gradients down to layer 20 only
    np.testing.assert_array_equal(layers[20].weight, adaptive[0][0].weight.detach().numpy())


def test_whole_stream_on_the_host_ends_where_the_run_ended(tiny_run_dir, tmp_path, tinycl_cli, monkeypatch,
                                                           require_toolchain):
    """The whole stream of a finished run (conftest's tiny_run_dir: the default model at 64 px,
    2 frames per video, 1 epoch, 60 replays; 79 experiences, 79 steps) replayed in C: the
    Python rebuild traced until 3 experiences and 100 steps (here the whole stream), the C run's
    test predictions on every test image against the finished run's own (its deployment.tcd)
    and its final accuracy (summary.json). ~45 s."""
    require_toolchain("host")
    monkeypatch.setenv("TINYCL_CACHE", str(tiny_run_dir.parent / "cache"))
    out = tmp_path / "project"
    code, stdout, err = tinycl_cli("export", tiny_run_dir, "--train", "--verify", "--out", out)
    assert code == 0, err + stdout
    data = read_json(out / "train_verify.json")
    summary = read_json(tiny_run_dir / "summary.json")
    assert data["ok"] and data["whole_stream"] and data["experiences"] == summary["num_batches"] == 79
    checks = data["checks"]
    assert checks["steps_compared"] == data["steps"] == 79 and checks["experiences_compared"] == 79
    assert checks["loss_max_rel_error_first_100_steps"] <= 1e-4
    predictions = data["test_predictions"]
    assert predictions["images"] == summary["test_images"] == 300
    assert predictions["identical_fraction"] >= 0.98 and predictions["accuracy_points_off"] <= 0.5
    assert predictions["run_final_accuracy"] == summary["final_accuracy"]
