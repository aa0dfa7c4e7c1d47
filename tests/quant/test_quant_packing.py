import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.errors import TinyclError
from tinycl.quant.packing import pack_bits, packed_bytes, packed_row_bytes, unpack_bits


def bitstream_reference(codes: np.ndarray, bits: int) -> np.ndarray:
    """The documented layout, built bit by bit with numpy.packbits (MSB first)."""
    planes = (codes[..., None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(planes.reshape(codes.shape[0], -1).astype(np.uint8), axis=1)


@pytest.mark.parametrize("bits", range(1, 9))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_roundtrip_and_layout_every_q(bits, data):
    n = data.draw(st.integers(0, 4))
    d = data.draw(st.integers(1, 70))
    seed = data.draw(st.integers(0, 2**32 - 1))
    codes = np.random.default_rng(seed).integers(0, 2**bits, (n, d), dtype=np.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (n, -(-d * bits // 8))
    if n:
        assert np.array_equal(packed, bitstream_reference(codes, bits))
    assert np.array_equal(unpack_bits(packed, bits, d), codes)


def test_byte_counts():
    # one LR at layer 19 of MobileNetV1 128x128 = 32,768 values (REFERENCES.md)
    assert packed_row_bytes(32768, 8) == 32768
    assert packed_row_bytes(32768, 7) == 28672
    assert packed_row_bytes(32768, 32) == 131072
    assert packed_bytes(1500, 32768, 8) == 49_152_000  # 49.15 MB (REFERENCES.md)
    assert packed_bytes(1500, 32768, 7) == 43_008_000  # 43.0 MB
    assert packed_bytes(3, 5, 3) == 3 * 2  # ceil(15 / 8)
    codes = np.zeros((2, 32768), np.uint8)
    assert pack_bits(codes, 7).shape == (2, 28672)


@pytest.mark.parametrize("bad", [0, 9, 16, 33, -1, 2.5, True])
def test_bad_bits(bad):
    with pytest.raises(TinyclError, match="bits must be"):
        packed_row_bytes(10, bad)


def test_bad_inputs():
    with pytest.raises(TinyclError, match="bits must be 1..8"):
        pack_bits(np.zeros((1, 4), np.uint8), 32)
    with pytest.raises(TinyclError, match="exceed 3 bits"):
        pack_bits(np.full((1, 4), 8, np.uint8), 3)
    with pytest.raises(TinyclError, match="uint8"):
        pack_bits(np.zeros((1, 4), np.int32), 3)
    with pytest.raises(TinyclError, match="packed latents"):
        unpack_bits(np.zeros((1, 5), np.uint8), 3, 8)
