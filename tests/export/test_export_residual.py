"""MobileNetV2 and PhiNet (MCU mode) exported and run on the host, Cortex-M4F and RV32 (QEMU):
their INT8 frozen stages of integer blocks (ReLU6 clamps, linear bottlenecks, residual adds,
PhiNet's depthwise stem on the image) give the Python run's LR codes to the byte, signed LR
layers included; logits within 1e-5 relative, identical predictions, the same bits on every
target. Also: the deployment file keeps blocks and signed quantizers, and what the runtime
cannot run is refused in one line."""

import numpy as np
import pytest
from exporttools import RES, camera_frames, tiny_mobilenet

from tinycl.data.base import to_tensor_batch
from tinycl.errors import TinyclError
from tinycl.export import build_project, compare_outputs, make_deployment, reference_outputs, run_project, write_project
from tinycl.export.deployment import encode_deployment, load_deployment, save_deployment
from tinycl.quant import LatentQuantizer, pack_bits, quantize_frozen_stage
from tinycl.quant.int_blocks import IntBlock

FRAMES = 12
# (model, LR layer): the LR layer after the last residual block of the adaptive stage; MobileNetV2's
# block 16 adds its shortcut (a signed LR layer), PhiNet's block 6 (index 7) too; MobileNetV2's
# block 17 has no shortcut, its LR layer is a linear bottleneck (signed, without an add).
CASES = [("mobilenet_v2", 16), ("mobilenet_v2", 17), ("phinet", 7)]


def residual_deployment(model: str, lr_layer: int, bits: int = 6, replays: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    calib = camera_frames(16, rng)
    frozen, adaptive = tiny_mobilenet(calib, seed, model, lr_layer)
    stage = quantize_frozen_stage(frozen, to_tensor_batch(calib))
    lr = stage(to_tensor_batch(calib)).numpy()
    quantizer = LatentQuantizer(bits, "shift", latent_scale=stage.output_scale).calibrate(lr)
    rows = pack_bits(quantizer.encode(lr[:replays]).reshape(replays, -1), bits)
    dep = make_deployment(stage, quantizer, adaptive, (RES, RES), replay_rows=rows,
                          replay_labels=rng.integers(0, 10, replays), meta={"model": model, "lr_layer": lr_layer})
    return dep, adaptive, camera_frames(FRAMES, rng)


@pytest.fixture(scope="module")
def exports(tmp_path_factory, require_toolchain):
    """case -> (deployment, project, frames, Python outputs, host outputs), each built once."""
    done = {}

    def get(case):
        if case not in done:
            model, lr_layer = case
            dep, adaptive, frames = residual_deployment(model, lr_layer)
            project = write_project(dep, tmp_path_factory.mktemp(f"{model}{lr_layer}"))
            want = reference_outputs(dep, frames, adaptive)
            assert compare_outputs(want, reference_outputs(dep, frames))["ok"]  # the lowered ops agree
            require_toolchain("host")
            build_project(project.root, "host")
            done[case] = (dep, project, frames, want, run_project(project.root, "host", frames))
        return done[case]

    return get


@pytest.mark.parametrize("case", CASES, ids=[f"{m}-L{k}" for m, k in CASES])
def test_blocks_signed_latents_and_host(exports, case):
    dep, project, _, want, host = exports(case)
    blocks = [layer for layer in dep.stage.layers if isinstance(layer, IntBlock)]
    assert blocks and dep.stage.output_signed and dep.quantizer.signed  # an INT8 LR layer
    kinds = {layer.kind for layer in blocks}
    assert any(k.endswith("+add") for k in kinds) and any("relu6" in k for k in kinds)
    source = (project.root / "tinycl_model.c").read_text()
    assert "residual_add_s8(" in source and "latent_shift_s8(" in source and "_range(" in source
    assert "#define TINYCL_LATENT_OFFSET 32" in (project.root / "tinycl_model.h").read_text()  # 2**(6-1)
    assert len(project.buffers) and project.buffers["tinycl_frozen_act2"] > 0  # a block keeps its input
    assert (want.lr_u8 > 127).any() and (want.lr_u8 < 127).any()  # negative codes travel as bytes
    verdict = compare_outputs(want, host)
    assert verdict["ok"], verdict
    assert len(set(want.predictions.tolist())) > 1  # not a constant model


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=["mobilenet_v2-L16", "phinet-L7"])
def test_qemu_target(exports, require_toolchain, case, target):
    """The emulated targets on one cut per model (block 17's differs from 16's in its LR layer only)."""
    _, project, frames, want, host = exports(case)
    require_toolchain(target)
    build_project(project.root, target)
    got = run_project(project.root, target, frames)
    verdict = compare_outputs(want, got)
    assert verdict["ok"], verdict
    assert got.logits.tobytes() == host.logits.tobytes()


def test_deployment_file_keeps_blocks(tmp_path):
    dep, _, _ = residual_deployment("phinet", 7, bits=8, replays=2)
    path = tmp_path / "dep.tcd"
    save_deployment(path, dep)
    back = load_deployment(path)
    assert encode_deployment(back) == encode_deployment(dep)
    assert back.quantizer.signed and [la.kind for la in back.stage.layers] == [la.kind for la in dep.stage.layers]
    assert back.stage.layers[0].kind == "dw-linear+pw-relu6"  # PhiNet's stem: depthwise on the image


def test_residual_block_in_the_adaptive_stage_is_one_line():
    with pytest.raises(TinyclError, match="adaptive.* a residual block .*choose an LR layer at or after"):
        residual_deployment("mobilenet_v2", 13)


def test_signedness_mismatch_is_refused():
    dep, _, _ = residual_deployment("mobilenet_v2", 17, bits=8, replays=1)
    dep.quantizer.signed = False
    with pytest.raises(TinyclError, match="signedness does not match"):
        dep.validate()
