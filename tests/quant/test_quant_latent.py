import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.quant.latent import LatentQuantizer

ALL_U8 = np.arange(256, dtype=np.uint8).reshape(1, 256)


def test_shift_q8_is_identity_and_decode_uses_scale():
    q = LatentQuantizer(8, latent_scale=0.5)
    assert np.array_equal(q.encode(ALL_U8), ALL_U8)
    assert np.array_equal(q.decode(ALL_U8), ALL_U8.astype(np.float32) * 0.5)


@pytest.mark.parametrize("bits", range(1, 9))
def test_shift_codes_and_error(bits):
    q = LatentQuantizer(bits)
    codes = q.encode(ALL_U8)
    assert codes.dtype == np.uint8 and int(codes.max()) == 2**bits - 1
    assert codes[0, 0] == 0 and q.decode(codes)[0, 0] == 0.0  # ReLU zeros stay exact
    step = 2 ** (8 - bits)
    top = (2**bits - 1) * step  # largest decodable value; above it values saturate
    err = np.abs(q.decode(codes) - ALL_U8)[0, : top + 1]
    assert err.max() <= step / 2


@pytest.mark.parametrize("bits", [2, 4, 7])
def test_clip_beats_or_equals_shift_and_per_channel_helps(bits):
    rng = np.random.default_rng(0)
    # channels with very different ranges: per-channel clip values pay off
    ranges = np.array([10, 40, 255, 3])
    lat = (rng.random((64, 4, 5, 5)) * ranges.reshape(1, 4, 1, 1)).astype(np.uint8)
    mse = {}
    for name, q in {
        "shift": LatentQuantizer(bits),
        "clip": LatentQuantizer(bits, mode="clip"),
        "clip_pc": LatentQuantizer(bits, mode="clip", per_channel=True),
    }.items():
        q.calibrate(lat)
        codes = q.encode(lat)
        assert codes.shape == lat.shape and int(codes.max()) < 2**bits
        mse[name] = float(((q.roundtrip(lat) - lat) ** 2).mean())
    assert mse["clip"] <= mse["shift"] + 1e-9
    assert mse["clip_pc"] < mse["clip"]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 8), st.integers(1, 255), st.integers(0, 2**32 - 1))
def test_clip_codes_in_range(bits, top, seed):
    lat = np.random.default_rng(seed).integers(0, top + 1, (8, 16), dtype=np.uint8)
    q = LatentQuantizer(bits, mode="clip").calibrate(lat)
    assert 1 <= int(q.clip_u8[0]) <= 255
    codes = q.encode(lat)
    assert int(codes.max()) <= 2**bits - 1
    step = float(q.clip_u8[0]) / (2**bits - 1)
    inside = lat <= q.clip_u8[0]
    assert np.all(np.abs(q.decode(codes) - lat)[inside] <= step / 2 + 1e-4)


def test_fp32_baseline():
    q = LatentQuantizer(32, latent_scale=0.25)
    out = q.encode(ALL_U8)
    assert out.dtype == np.float32 and out[0, 4] == 1.0
    assert np.array_equal(q.decode(out), out)


@pytest.mark.parametrize("bad", [0, 9, 16, 31, 33, -2])
def test_bad_bits_one_clear_error(bad):
    with pytest.raises(TinyclError, match=r"bits must be 1\.\.8 or 32"):
        LatentQuantizer(bad)


def test_other_errors():
    with pytest.raises(TinyclError, match="mode"):
        LatentQuantizer(4, mode="log")
    with pytest.raises(TinyclError, match="per-channel"):
        LatentQuantizer(4, per_channel=True)
    with pytest.raises(TinyclError, match="before calibrate"):
        LatentQuantizer(4, mode="clip").encode(ALL_U8)
    with pytest.raises(TinyclError, match="empty"):
        LatentQuantizer(4, mode="clip").calibrate(np.zeros((0, 8), np.uint8))
    with pytest.raises(TinyclError, match="uint8"):
        LatentQuantizer(4).encode(np.zeros((2, 8), np.float32))


@pytest.mark.parametrize("bits", [3, 4])
def test_clip_on_relu_like_latents_keeps_zeros_and_beats_shift(bits):
    # ReLU latents: mostly exact zeros and a long tail that rarely reaches 255, the case where a
    # clipping scale spends the few codes better than the shift's fixed step of 2**(8 - Q)
    rng = np.random.default_rng(1)
    lat = np.where(rng.random((256, 8, 4, 4)) < 0.6, 0,
                   np.minimum(rng.exponential(12.0, (256, 8, 4, 4)), 255)).astype(np.uint8)
    lat[0, :, 0, 0] = 255  # one outlier per channel: min-max would keep the shift's range
    mse = {}
    for name, q in {"shift": LatentQuantizer(bits), "clip": LatentQuantizer(bits, mode="clip"),
                    "clip_pc": LatentQuantizer(bits, mode="clip", per_channel=True)}.items():
        decoded = q.calibrate(lat).roundtrip(lat)
        assert np.all(decoded[lat == 0] == 0.0)  # zeros stay exact
        mse[name] = float(((decoded - lat) ** 2).mean())
    assert mse["clip"] < 0.8 * mse["shift"]
    assert mse["clip_pc"] <= mse["clip"] + 1e-9


ALL_S8 = np.arange(-127, 128, dtype=np.int8).reshape(1, 255)


def test_signed_latents_q8_is_lossless_and_offset_binary():
    # a linear bottleneck's INT8 latents (MobileNetV2 / PhiNet LR layers): calibrating on int8
    # makes the quantizer signed; codes are s8 + 128
    q = LatentQuantizer(8, latent_scale=0.5).calibrate(ALL_S8)
    assert q.signed
    codes = q.encode(ALL_S8)
    assert codes.dtype == np.uint8 and np.array_equal(codes.astype(np.int64), ALL_S8.astype(np.int64) + 128)
    assert np.array_equal(q.decode(codes), ALL_S8.astype(np.float32) * 0.5)


@pytest.mark.parametrize("bits", range(1, 9))
def test_signed_shift_codes_and_error(bits):
    q = LatentQuantizer(bits, signed=True)
    codes = q.encode(ALL_S8)
    assert codes.dtype == np.uint8 and int(codes.max()) <= 2**bits - 1  # offset binary: unsigned
    decoded = q.decode(codes)
    assert decoded[0, 127] == 0.0  # zero stays exactly zero
    step = 2 ** (8 - bits)
    top = (2 ** (bits - 1) - 1) * step  # largest decodable value; above it values saturate
    inside = np.abs(ALL_S8[0].astype(np.int64)) <= top
    assert np.abs(decoded - ALL_S8)[0, inside].max() <= step / 2
    assert np.all(np.diff(codes.astype(np.int64)) >= 0)  # monotone


def test_signed_latents_errors():
    with pytest.raises(TinyclError, match="latent-mode shift"):
        LatentQuantizer(4, mode="clip").calibrate(ALL_S8)
    with pytest.raises(TinyclError, match="int8"):
        LatentQuantizer(4, signed=True).encode(ALL_U8)
    with pytest.raises(TinyclError, match="uint8"):
        LatentQuantizer(4).encode(ALL_S8)
    fp32 = LatentQuantizer(32, latent_scale=0.25)
    assert fp32.encode(ALL_S8)[0, 0] == -127 * 0.25


@pytest.mark.parametrize("mode, per_channel", [("shift", False), ("clip", False), ("clip", True)])
def test_no_latents_round_trip_to_no_latents(mode, per_channel):
    """A mini-batch may take no replays (AR1*'s memory-order slices past a memory smaller than N):
    encoding and decoding zero latents gives zero latents of the right shape, not an error."""
    q = LatentQuantizer(4, mode=mode, per_channel=per_channel)
    rng = np.random.default_rng(0)
    q.calibrate(rng.integers(0, 256, (8, 16, 2, 2), dtype=np.uint8))
    empty = np.zeros((0, 16, 2, 2), dtype=np.uint8)
    codes = q.encode(empty)
    assert codes.shape == (0, 16, 2, 2) and codes.dtype == np.uint8
    decoded = q.decode(codes)
    assert decoded.shape == (0, 16, 2, 2) and decoded.dtype == np.float32
