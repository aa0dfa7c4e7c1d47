import numpy as np
import pytest
import torch

from tinycl.errors import TinyclError
from tinycl.prng import Pcg32
from tinycl.quant import LatentQuantizer
from tinycl.replay.codecs import Float32Codec, PackedCodec
from tinycl.replay.memory import LatentReplayMemory, recipe_replace_count


def test_recipe_replace_count():
    # ar1-pytorch: h = min(rm_sz // (i + 1), n)
    assert recipe_replace_count(1500, 0, 3000) == 1500
    assert recipe_replace_count(1500, 1, 300) == 300
    assert recipe_replace_count(1500, 9, 300) == 150
    assert recipe_replace_count(1500, 389, 300) == 3


def tagged(n, start, dim=4):
    """Latents whose every value is the sample's id, labels = id % 7: alignment is checkable."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return ids[:, None].repeat(1, dim), (ids.long() % 7)


def test_recipe_policy_fills_then_overwrites_and_keeps_labels_aligned():
    rng = Pcg32(0)
    mem = LatentReplayMemory(10, Float32Codec(4), num_classes=7)
    x, y = tagged(30, 0)
    mem.update(x, y, 0, rng)
    assert len(mem) == 10  # batch 0 fills the memory
    x2, y2 = tagged(20, 100)
    mem.update(x2, y2, 1, rng)  # h = min(10 // 2, 20) = 5 slots overwritten
    lat, lab = mem.get(torch.arange(10))
    ids = lat[:, 0].long()
    assert int((ids >= 100).sum()) == 5
    assert torch.equal(lab, ids % 7)
    assert torch.equal(lat, ids[:, None].float().repeat(1, 4))


def test_recipe_policy_underfull_first_batch_fills_free_slots_first():
    rng = Pcg32(1)
    mem = LatentReplayMemory(10, Float32Codec(4), num_classes=7)
    mem.update(*tagged(4, 0), 0, rng)
    assert len(mem) == 4
    mem.update(*tagged(8, 50), 1, rng)  # h = min(5, 8) = 5: 5 free slots available
    assert len(mem) == 9


def test_ar1_policy_keeps_batch_0_sample_size_and_draws_like_the_reference():
    # ar1-pytorch: rm = batch 0's h = min(rm_sz, n) sample, never grows; later h slots replaced.
    mem = LatentReplayMemory(10, Float32Codec(4), num_classes=7, policy="ar1")
    rng = Pcg32(3)
    mem.update(*tagged(4, 0), 0, rng)
    assert len(mem) == 4
    mem.update(*tagged(8, 50), 1, rng)  # h = min(10 // 2, 8) = 5, capped at the 4 held
    lat, _ = mem.get(torch.arange(4))
    assert len(mem) == 4 and bool((lat[:, 0] >= 50).all())
    # The draws: choice(n, h) of the new items, then choice(size, h) of the slots.
    mem = LatentReplayMemory(10, Float32Codec(4), num_classes=7, policy="ar1")
    rng, ref = Pcg32(4), Pcg32(4)
    mem.update(*tagged(30, 0), 0, rng)
    first = ref.choice(30, 10)
    assert torch.equal(mem.get(torch.arange(10))[0][:, 0].long(), torch.from_numpy(first))
    mem.update(*tagged(20, 100), 1, rng)
    new, slots = ref.choice(20, 5), ref.choice(10, 5)
    assert torch.equal(mem.get(torch.from_numpy(slots))[0][:, 0].long(), torch.from_numpy(new + 100))


def test_reservoir_and_class_balanced_policies():
    rng = Pcg32(2)
    res = LatentReplayMemory(20, Float32Codec(4), num_classes=7, policy="reservoir")
    cb = LatentReplayMemory(21, Float32Codec(4), num_classes=7, policy="class-balanced")
    for b in range(10):
        x, y = tagged(50, 1000 * b)
        res.update(x, y, b, rng)
        cb.update(x, y, b, rng)
    assert len(res) == 20 and res.seen == 500
    lat, lab = res.get(torch.arange(20))
    assert torch.equal(lab, lat[:, 0].long() % 7)
    counts = np.bincount(cb.labels[: len(cb)].numpy(), minlength=7)
    assert counts.tolist() == [3] * 7


def test_bad_capacity_and_policy():
    with pytest.raises(TinyclError, match="replay capacity must be >= 0"):
        LatentReplayMemory(-1, Float32Codec(4), 7)
    with pytest.raises(TinyclError, match="unknown replay policy"):
        LatentReplayMemory(1, Float32Codec(4), 7, policy="fifo")


@pytest.mark.parametrize("bits", [1, 3, 4, 7, 8])
def test_packed_memory_bytes_and_roundtrip(bits):
    d, n = 37, 12
    quant = LatentQuantizer(bits, latent_scale=0.5)
    codec = PackedCodec(d, quant, (d,))
    mem = LatentReplayMemory(n, codec, num_classes=50)
    # N LRs of D values at Q bits take N * ceil(D * Q / 8) bytes, labels one byte each.
    assert mem.latent_bytes == n * -(-d * bits // 8)
    assert mem.label_bytes == n
    u8 = np.random.default_rng(bits).integers(0, 256, (n, d), dtype=np.uint8)
    codes = torch.from_numpy(quant.encode(u8))
    mem.update(codes, torch.arange(n) % 50, 0, Pcg32(0))
    lat, lab = mem.get(torch.arange(n))
    order = lab.argsort()
    assert torch.allclose(lat[order], torch.from_numpy(quant.decode(codes.numpy())))
