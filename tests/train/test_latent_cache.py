import numpy as np
import pytest
import torch

from tinycl.train.latent_cache import LatentCache, cache_key, data_fingerprint


def test_roundtrip_and_corruption_is_detected(tmp_path):
    cache = LatentCache(tmp_path, "k")
    items = np.arange(24, dtype=np.uint8).reshape(3, 8)
    labels = np.array([0, 4, 9])
    assert cache.load("batch_0000") is None
    cache.store("batch_0000", items, labels)
    got = cache.load("batch_0000")
    assert np.array_equal(got[0], items) and np.array_equal(got[1], labels) and cache.hits == 1
    path = cache.path("batch_0000")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="corrupted"):
        assert cache.load("batch_0000") is None
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning):
        assert cache.load("batch_0000") is None
    assert cache.rebuilt == ["batch_0000", "batch_0000"]


def test_key_depends_on_weights_and_settings(tmp_path):
    net = torch.nn.Conv2d(3, 4, 3)
    a = cache_key(net, {"bits": 8})
    assert a == cache_key(net, {"bits": 8}) and a != cache_key(net, {"bits": 7})
    with torch.no_grad():
        net.weight[0, 0, 0, 0] += 1
    assert cache_key(net, {"bits": 8}) != a
    f = tmp_path / "d.npz"
    f.write_bytes(b"x")
    before = data_fingerprint(tmp_path)
    f.write_bytes(b"xy")
    assert data_fingerprint(tmp_path) != before
