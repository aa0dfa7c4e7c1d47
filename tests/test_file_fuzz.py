"""Issue 14: byte-flip fuzzing of every on-disk format tinycl reads. Each damaged file is
either refused with one TinyclError line or read back as exactly what was written (a flip in
bytes the format does not use, e.g. zip metadata) -- never another exception, never silently
different data where the format carries a checksum."""

import numpy as np
import pytest
import torch

from tinycl.errors import TinyclError

FLIPS = 250


def flipped(data: bytes, rng: np.random.Generator):
    positions = sorted(set(rng.integers(0, len(data), FLIPS).tolist()) | set(range(min(48, len(data)))))
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        yield pos, bytes(damaged)


def fuzz(path, read, same):
    original = path.read_bytes()
    reference = read(path)
    outcomes = {"refused": 0, "identical": 0}
    for pos, damaged in flipped(original, np.random.default_rng(0)):
        path.write_bytes(damaged)
        try:
            value = read(path)
        except TinyclError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
            continue
        assert same(value, reference), f"a flip at byte {pos} was read as different data"
        outcomes["identical"] += 1
    assert outcomes["refused"] > 0
    return outcomes


def test_checkpoint(tmp_path):
    from tinycl.train.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "c.ckpt"
    save_checkpoint(path, {"w": torch.arange(64.0), "stream": {"next_batch": 3}})
    outcomes = fuzz(path, load_checkpoint, lambda a, b: torch.equal(a["w"], b["w"]) and a["stream"] == b["stream"])
    assert outcomes["identical"] == 0  # every byte is under the header or the SHA-256


def test_deployment(tmp_path):
    from tinycl.export.deployment import load_deployment, make_deployment, save_deployment
    from tinycl.models import create_model
    from tinycl.quant import quantize_frozen_stage
    from tinycl.quant.latent import LatentQuantizer
    from tinycl.train.stages import prepare_stages

    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width=0.25, num_classes=4)
    frozen, adaptive = prepare_stages(model, 23, "brn")
    stage = quantize_frozen_stage(frozen, torch.randn(4, 3, 32, 32))
    quantizer = LatentQuantizer(8, "shift", False, latent_scale=stage.output_scale)
    dep = make_deployment(stage, quantizer, adaptive, (32, 32), 4)
    path = tmp_path / "d.tcd"
    save_deployment(path, dep)
    outcomes = fuzz(path, load_deployment, lambda a, b: a.num_classes == b.num_classes)
    assert outcomes["identical"] == 0


def test_weights(tmp_path):
    from tinycl.models.weights import read_state_dict

    path = tmp_path / "w.pt"
    torch.save({"features.0.weight": torch.randn(8, 3, 3, 3), "head.weight": torch.randn(4, 8)}, path)
    # A weights file carries no checksum: a flip inside a tensor's bytes reads as other values
    # (torch's zip reader does not check CRCs). What must hold: no crash, one line or a state.
    original = path.read_bytes()
    for _, damaged in flipped(original, np.random.default_rng(1)):
        path.write_bytes(damaged)
        try:
            state = read_state_dict(path)
        except TinyclError as exc:
            assert "\n" not in str(exc)
            continue
        assert set(state) == {"features.0.weight", "head.weight"}


def test_synthetic_cache_file(tmp_path):
    from tinycl.data.synthetic import SyntheticConfig, _expected, _read_checked, _write_atomic

    rng = np.random.default_rng(2)
    arrays = {"images": rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)}
    arrays.update({name: np.arange(6, dtype=np.int64) for name in ("labels", "sessions", "objects", "frames")})
    path = tmp_path / "s.npz"
    _write_atomic(path, arrays)
    expected = _expected("", 6, 16)
    assert SyntheticConfig  # the cache belongs to the synthetic benchmark

    def read(p):
        out = _read_checked(p, expected)
        if out is None:
            raise TinyclError("stale")  # the loader regenerates: the fuzz counts it as refused
        return out

    fuzz(path, read, lambda a, b: all(np.array_equal(a[k], b[k]) for k in b))


@pytest.mark.parametrize("what", ["config"])
def test_config_toml(tmp_path, what):
    from tinycl.config import RunConfig, dump_toml, from_dict, load_toml, validate

    path = tmp_path / "config.toml"
    path.write_text(dump_toml(RunConfig()))

    def read(p):
        return validate(from_dict(load_toml(p), source=str(p)))

    original = path.read_bytes()
    for _, damaged in flipped(original, np.random.default_rng(3)):
        path.write_bytes(damaged)
        try:
            read(path)
        except TinyclError as exc:
            assert "\n" not in str(exc)
