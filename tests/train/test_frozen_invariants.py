"""The frozen stage stays frozen: for every model, strategy and arithmetic (issue 13).

(a) its parameters and buffers are bit-identical before and after a run;
(b) a latent does not depend on the batch it was computed in, even after a probe and a stray
    ``model.train()`` (what once put the float stage's BatchNorms in train mode);
(c) a run's FP32 and INT8-stage accuracies stay within a stated band (a pretrained backbone).
"""

import numpy as np
import pytest
import torch

from tinycl.config import RunConfig
from tinycl.models import FrozenBatchNorm2d, create_model, layer_table, state_digest
from tinycl.train.encoder import LatentEncoder
from tinycl.train.experiment import Events, run_experiment
from tinycl.train.stages import prepare_stages

# Each model's LR layer at 32 px (sparse-sweep's defaults); all three run the INT8 frozen stage
# (MobileNetV2 and PhiNet since issue 18: ReLU6 clamps, linear bottlenecks, integer residual adds).
MODELS = {"mobilenet_v1": 19, "mobilenet_v2": 16, "phinet": 5}
STRATEGIES = ("latent-replay", "naive", "joint", "raw-replay")
INT8_MODELS = tuple(MODELS)


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random-init backbones (pretraining would take minutes); BN statistics made non-trivial so
    that batch statistics would differ from them."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = create_model(name, width=0.25, num_classes=10)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        paths[name] = folder / f"{name}.pt"
        torch.save(model.state_dict(), paths[name])
    return paths


def tiny_config(name, weights, strategy, bits, out):
    cfg = RunConfig(seed=0, out=str(out))
    cfg.model.name, cfg.model.res, cfg.model.lr_layer, cfg.model.weights = name, 32, MODELS[name], str(weights)
    cfg.data.frames, cfg.data.scenario, cfg.data.labels = 1, "ci", "category"
    cfg.replay.bits, cfg.replay.replays = bits, 20
    cfg.train.epochs, cfg.train.joint_epochs, cfg.train.strategy = 1, 1, strategy
    cfg.eval.latent_cache = False
    return cfg


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("name", "bits"), [(n, 32) for n in MODELS] + [(n, 8) for n in INT8_MODELS])
def test_frozen_stage_is_bit_identical_after_a_run(name, bits, strategy, weights, tmp_path, one_thread):
    seen = {}

    def on_stages(frozen, adaptive):
        seen["frozen"], seen["digest"] = frozen, state_digest(frozen)
        seen["tensors"] = {k: v.clone() for k, v in frozen.state_dict().items()}

    summary = run_experiment(tiny_config(name, weights[name], strategy, bits, tmp_path), Events(on_stages=on_stages))
    frozen = seen["frozen"]
    assert summary["frozen_arithmetic"] == ("float" if bits == 32 else "int8")
    assert state_digest(frozen) == seen["digest"] == summary["frozen_stage_sha256"]
    after = frozen.state_dict()
    assert all(torch.equal(after[k], v) for k, v in seen["tensors"].items())
    bns = [m for m in frozen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(isinstance(m, FrozenBatchNorm2d) and not m.training for m in bns)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("name", ["mobilenet_v2", "phinet"])
def test_int8_stage_of_residual_models_reports_fidelity_and_deployability(name, weights, tmp_path, one_thread):
    summary = run_experiment(tiny_config(name, weights[name], "latent-replay", 8, tmp_path))
    fidelity = summary["fidelity"]
    assert summary["frozen_arithmetic"] == "int8" and summary["lr_bits"] == 8
    assert len(fidelity["layers"]) == MODELS[name] + 1 and fidelity["layers"][-1]["kind"].endswith("pw-linear+add")
    assert all(row["sqnr_db"] > 15 for row in fidelity["layers"])  # random weights: the arithmetic, not accuracy
    assert 0 <= fidelity["int_accuracy"] <= 1 and fidelity["agreement"] > 0.5
    if name == "mobilenet_v2":  # cut at its last residual block: the adaptive stage is a chain
        assert summary["deployable"] and not summary["not_deployable_because"]
    else:  # PhiNet's cut leaves residual blocks above it: the run says so in one line
        assert not summary["deployable"] and "a residual block (PhiNetBlock with its identity shortcut) has no FP32 " \
            "kernel" in summary["not_deployable_because"]
        assert "\n" not in summary["not_deployable_because"]


@pytest.mark.parametrize(("name", "arithmetic"), [(n, "float") for n in MODELS] + [(n, "int8") for n in INT8_MODELS])
def test_a_latent_does_not_depend_on_its_batch(name, arithmetic, weights, one_thread):
    model = create_model(name, width=0.25, num_classes=10)
    model.load_state_dict(torch.load(weights[name], weights_only=True))
    model.train()
    frozen, _ = prepare_stages(model, MODELS[name], "brn")
    shape = layer_table(model, 32)[MODELS[name]].out_shape  # a probe after the split...
    model.train()  # ...and a stray train() on the whole model: neither may unfreeze the stage
    images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    encoder = LatentEncoder(frozen, shape, 32 if arithmetic == "float" else 8, arithmetic=arithmetic,
                            calib_images=images, weight_quant="per-channel", observer="minmax",
                            latent_mode="shift", latent_per_channel=False)
    in_chunk, items = encoder.encode(images)
    for i in (0, 17, 63):
        alone, alone_items = encoder.encode(images[i : i + 1])
        if arithmetic == "int8":
            assert torch.equal(alone_items[0], items[i])
        else:
            torch.testing.assert_close(alone[0], in_chunk[i], rtol=1e-5, atol=1e-5)


def test_fp32_and_int8_stage_accuracies_agree_on_a_pretrained_backbone(tmp_path, one_thread):
    """The shipped MobileNetV1 w0.25 @ 64 px on NICv2-79 (2 frames per video, 1 epoch, 250
    replays; 50 classes, chance 2 %): the INT8 frozen stage moves the final accuracy by at most
    1.5 points. Measured: 15.33 % FP32 vs 14.67 % INT8; with the float stage's BatchNorms in
    train mode (the bug) it was 13.33 % vs 15.33 %."""
    accuracy = {}
    for bits in (32, 8):
        cfg = RunConfig(seed=0, out=str(tmp_path / str(bits)))
        cfg.data.frames = 2
        cfg.replay.bits, cfg.replay.replays, cfg.train.epochs = bits, 250, 1
        cfg.eval.latent_cache = False
        accuracy[bits] = run_experiment(cfg)["final_accuracy"]
    assert accuracy[32] > 0.10  # 5x chance: the band means something
    assert abs(accuracy[32] - accuracy[8]) <= 0.015, accuracy
