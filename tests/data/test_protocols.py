import numpy as np
import pytest

from tinycl.data.base import ImageSet
from tinycl.data.protocols import build_stream
from tinycl.errors import TinyclError

TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)


def fake_train(frames=3, objects=50, sessions=TRAIN_SESSIONS):
    o, s, f = np.meshgrid(np.arange(objects), sessions, np.arange(frames), indexing="ij")
    o, s, f = o.ravel(), s.ravel(), f.ravel()
    images = np.zeros((len(o), 2, 2, 3), np.uint8)
    return ImageSet(images, o.astype(np.int64), s.astype(np.int64), o.astype(np.int64), f.astype(np.int64))


@pytest.mark.parametrize("scenario,count", [("nicv2_391", 391), ("nicv2_196", 196), ("nicv2_79", 79),
                                            ("ni", 8), ("nc", 9)])
def test_batch_counts_and_every_sample_once(scenario, count):
    train = fake_train()
    stream = build_stream(train, scenario, run=0)
    assert len(stream) == count
    allidx = np.concatenate([e.sample_indices for e in stream])
    assert sorted(allidx.tolist()) == list(range(len(train)))


def test_nicv2_batch0_and_gradual_introduction():
    train = fake_train()
    stream = build_stream(train, "nicv2_391", run=0)
    b0 = stream[0]
    # Batch 0: the first object of each category (labels 0, 5, ..., 45) in session 1.
    assert sorted(set(train.objects[b0.sample_indices].tolist())) == list(range(0, 50, 5))
    assert set(train.sessions[b0.sample_indices].tolist()) == {1}
    assert len(b0) == 10 * 3
    assert all(len(e.videos) == 1 and len(e) == 3 for e in stream[1:])
    seen, intro = set(), []
    for e in stream:
        new = set(train.objects[e.sample_indices].tolist()) - seen
        if new:
            intro.append(e.index)
        seen |= new
    assert len(seen) == 50
    # Gradual: 40 new objects spread over the stream; the last by batch 340 (CORe50 run 0).
    assert len(intro) == 41 and intro[-1] <= 341 and intro[1] < 40
    # Frames of a video stay in order inside its batch.
    assert np.all(np.diff(train.frames[stream[5].sample_indices]) == 1)


def test_runs_differ_and_are_deterministic():
    train = fake_train()
    a = [e.videos for e in build_stream(train, "nicv2_391", run=0)]
    b = [e.videos for e in build_stream(train, "nicv2_391", run=0)]
    c = [e.videos for e in build_stream(train, "nicv2_391", run=1)]
    assert a == b and a != c and a[0] == c[0]


def test_grouped_scenarios_follow_the_391_order():
    train = fake_train()
    v391 = [v for e in build_stream(train, "nicv2_391")[1:] for v in e.videos]
    v79 = [v for e in build_stream(train, "nicv2_79")[1:] for v in e.videos]
    assert v391 == v79
    assert all(len(e.videos) == 5 for e in build_stream(train, "nicv2_79")[1:])


def test_bad_scenario_and_run():
    with pytest.raises(TinyclError, match="unknown scenario"):
        build_stream(fake_train(), "nicv3")
    with pytest.raises(TinyclError, match="--run must be >= 0"):
        build_stream(fake_train(), "ni", run=-1)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(objects=st.integers(1, 20), sessions=st.integers(1, 6), frames=st.integers(1, 3), run=st.integers(0, 5),
       scenario=st.sampled_from(["nicv2_391", "nicv2_196", "nicv2_79", "ni", "nc"]))
def test_streams_cover_every_sample_once(objects, sessions, frames, run, scenario):
    train = fake_train(frames=frames, objects=objects, sessions=tuple(range(1, sessions + 1)))
    stream = build_stream(train, scenario, run=run)
    allidx = np.concatenate([e.sample_indices for e in stream])
    assert sorted(allidx.tolist()) == list(range(len(train)))
    if scenario.startswith("nicv2"):
        categories = len({o // 5 for o in range(objects)})
        group = {"nicv2_391": 1, "nicv2_196": 2, "nicv2_79": 5}[scenario]
        rest = objects * sessions - categories
        assert len(stream) == 1 + -(-rest // group)
        # Batch 0 holds exactly the first object of every category, in the first session.
        assert sorted(set(train.objects[stream[0].sample_indices].tolist())) == list(range(0, objects, 5))
        # Every object of the training set is introduced somewhere in the stream.
        first_seen = {}
        for e in stream:
            for o, _ in e.videos:
                first_seen.setdefault(o, e.index)
        assert len(first_seen) == objects


def test_class_incremental_tasks_of_two_categories():
    train = fake_train()
    stream = build_stream(train, "ci", run=0)
    assert len(stream) == 5
    cats = [sorted(set((train.objects[e.sample_indices] // 5).tolist())) for e in stream]
    assert all(len(c) == 2 for c in cats)
    assert sorted(sum(cats, [])) == list(range(10))
    assert all(len(e) == 10 * 8 * 3 for e in stream)  # 2 categories x 5 objects x 8 sessions x 3 frames
    assert [c for c in cats] != [sorted(set((train.objects[e.sample_indices] // 5).tolist()))
                                 for e in build_stream(train, "ci", run=1)]
