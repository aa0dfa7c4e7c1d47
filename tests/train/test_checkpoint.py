"""Checkpoint files and learner state: exact round trips, refusals, atomic replacement."""

import pytest
import torch
from torch import nn

from tinycl.errors import TinyclError
from tinycl.replay.codecs import Float32Codec
from tinycl.replay.memory import LatentReplayMemory
from tinycl.train import checkpoint as ck
from tinycl.train.batch_renorm import BatchRenorm2d
from tinycl.train.learner import Learner


def make_learner(seed=0, cwr=True, capacity=40):
    torch.manual_seed(seed)
    adaptive = nn.Sequential(nn.Conv2d(4, 8, 1), BatchRenorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, 5))
    memory = LatentReplayMemory(capacity, Float32Codec(4 * 2 * 2), 5)
    return Learner(adaptive, memory, lr=0.05, inc_lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=2,
                   minibatch=16, norm="brn", cwr=cwr, num_classes=5, seed=seed)


def experience(i):
    gen = torch.Generator().manual_seed(100 + i)
    return torch.randn(24, 4, 2, 2, generator=gen), torch.randint(0, 5, (24,), generator=gen)


def train(learner, batches):
    losses = []
    for i in batches:
        x, y = experience(i)
        losses.append(learner.train_experience(x, y, i).loss_sum)
    return losses


def test_learner_state_round_trip_continues_bit_identically(tmp_path):
    straight = make_learner()
    expected = train(straight, range(4))

    first = make_learner()
    train(first, range(2))
    ck.save_checkpoint(tmp_path / "c.ckpt", {"learner": first.state_dict()})
    second = make_learner(seed=7)  # another seed: everything must come from the checkpoint
    second.load_state_dict(ck.load_checkpoint(tmp_path / "c.ckpt")["learner"])
    assert train(second, range(2, 4)) == expected[2:]
    for a, b in zip(straight.adaptive.state_dict().values(), second.adaptive.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(straight.memory.rows, second.memory.rows)
    assert torch.equal(straight.memory.labels, second.memory.labels)


def test_learner_state_that_does_not_fit_is_refused():
    state = make_learner().state_dict()
    with pytest.raises(TinyclError, match="replay memory rows: expected torch.float32 \\[30, 16\\]"):
        make_learner(capacity=30).load_state_dict(state)
    with pytest.raises(TinyclError, match="disagree on CWR"):
        make_learner(cwr=False).load_state_dict(state)
    state["adaptive"]["0.weight"] = torch.zeros(3, 4, 1, 1)
    with pytest.raises(TinyclError, match="does not fit this run's adaptive stage"):
        make_learner().load_state_dict(state)
    bad_memory = make_learner().state_dict()
    bad_memory["memory"]["size"] = 41
    with pytest.raises(TinyclError, match="replay memory counters are inconsistent"):
        make_learner().load_state_dict(bad_memory)


def test_file_format_header_and_refusals(tmp_path):
    path = tmp_path / "c.ckpt"
    ck.save_checkpoint(path, {"x": torch.arange(5), "note": "hi", "n": 3})
    data = path.read_bytes()
    assert data[:8] == b"TINYCLCK" and int.from_bytes(data[8:12], "little") == ck.FORMAT_VERSION
    assert int.from_bytes(data[12:20], "little") == len(data) - ck.HEADER.size
    assert torch.equal(ck.load_checkpoint(path)["x"], torch.arange(5))
    path.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(TinyclError, match="is not a tinycl checkpoint"):
        ck.load_checkpoint(path)
    with pytest.raises(TinyclError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "none.ckpt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    ck.save_checkpoint(path, {"step": 1})
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("tinycl.fileio.os.replace", crash)
    with pytest.raises(TinyclError, match=f"cannot write checkpoint {path}: disk full; the previous one is kept"):
        ck.save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]  # no temporary file left
