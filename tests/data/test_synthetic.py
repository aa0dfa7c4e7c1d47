"""synthetic-core50: structure, determinism, cache, disjoint pretraining corpus, shifts."""

from __future__ import annotations

import numpy as np
import pytest

from tinycl.data import synthetic
from tinycl.data.synthetic import (
    NUM_OBJECTS,
    TEST_SESSIONS,
    TRAIN_SESSIONS,
    SyntheticConfig,
    categories,
    generate_core50,
    generate_pretrain_corpus,
    load_pretrain_corpus,
    load_synthetic_core50,
)
from tinycl.errors import TinyclError

SMALL = SyntheticConfig(seed=3, res=32, frames=4, pretrain_classes=6, pretrain_per_class=12)
# What a valid cache file of SMALL's benchmark holds (8·50·4 train, 3·50·4 test images).
SMALL_EXPECTED = {**synthetic._expected("train_", 1600, 32), **synthetic._expected("test_", 600, 32)}


@pytest.fixture(scope="module")
def small_core50():
    return generate_core50(SMALL)


def test_constants_mirror_core50():
    assert NUM_OBJECTS == 50 and synthetic.NUM_CATEGORIES == 10
    assert TEST_SESSIONS == (3, 7, 10)
    assert TRAIN_SESSIONS == (1, 2, 4, 5, 6, 8, 9, 11)
    assert len(synthetic.CATEGORY_NAMES) == 10


def test_shapes_counts_and_order(small_core50):
    train, test = small_core50
    assert train.images.shape == (8 * 50 * 4, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (3 * 50 * 4, 32, 32, 3)
    for part in (train, test):
        for name in ("labels", "sessions", "objects", "frames"):
            assert getattr(part, name).dtype == np.int64
        np.testing.assert_array_equal(part.labels, part.objects)
    # Ordered by session, then object, then frame.
    np.testing.assert_array_equal(train.sessions, np.repeat(TRAIN_SESSIONS, 50 * 4))
    np.testing.assert_array_equal(train.objects[:200], np.repeat(np.arange(50), 4))
    np.testing.assert_array_equal(train.frames[:8], [0, 1, 2, 3, 0, 1, 2, 3])
    assert set(np.unique(test.sessions)) == set(TEST_SESSIONS)
    assert np.bincount(train.labels).tolist() == [8 * 4] * 50


def test_test_frames_and_category_mapping():
    config = SyntheticConfig(res=16, frames=1, test_frames=2)
    train, test = generate_core50(config)
    assert len(train) == 400 and len(test) == 300
    np.testing.assert_array_equal(categories(np.arange(50)), np.arange(50) // 5)
    specs = synthetic.object_specs(0)
    assert [spec.shape for spec in specs] == [o // 5 for o in range(50)]


def test_deterministic_and_seed_dependent(small_core50):
    train, test = generate_core50(SMALL)
    assert train.images.tobytes() == small_core50[0].images.tobytes()
    assert test.images.tobytes() == small_core50[1].images.tobytes()
    other, _ = generate_core50(SyntheticConfig(seed=4, res=32, frames=4))
    assert not np.array_equal(other.images, train.images)


def test_subset_renders_same_frames(small_core50):
    """A video depends only on (seed, object, session): rendered alone it is identical."""
    train, _ = small_core50
    obj, session = 17, 5
    rng = np.random.default_rng([SMALL.seed, synthetic._TAG_VIDEO, obj, session])
    video = synthetic.render_video(
        synthetic.object_specs(SMALL.seed)[obj],
        synthetic.session_specs(SMALL.seed)[session - 1],
        SMALL.frames, SMALL.res, rng,
    )
    index = (train.objects == obj) & (train.sessions == session)
    np.testing.assert_array_equal(train.images[index], video)


def test_cache_round_trip(tmp_path, small_core50):
    train, test = load_synthetic_core50(SMALL, cache_dir=tmp_path)
    path = synthetic.core50_cache_path(SMALL, tmp_path)
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    np.testing.assert_array_equal(train.images, small_core50[0].images)
    mtime = path.stat().st_mtime_ns
    again, _ = load_synthetic_core50(SMALL, cache_dir=tmp_path)
    assert path.stat().st_mtime_ns == mtime  # read, not rewritten
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again.sessions, train.sessions)
    # Pretraining knobs do not change the benchmark's cache file.
    other = SyntheticConfig(seed=3, res=32, frames=4, pretrain_classes=7)
    assert synthetic.core50_cache_path(other, tmp_path) == path


def test_cache_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path / "c"))
    assert synthetic.default_cache_dir() == tmp_path / "c"
    assert synthetic.pretrain_cache_path(SMALL).parent == tmp_path / "c"


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip"])
def test_corrupt_cache_is_regenerated(tmp_path, small_core50, damage):
    load_synthetic_core50(SMALL, cache_dir=tmp_path)
    path = synthetic.core50_cache_path(SMALL, tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not an npz file at all" * 10)
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one byte inside the image data: only the stored digest can tell
        data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert synthetic._read_checked(path, SMALL_EXPECTED) is None
    with pytest.warns(UserWarning, match="corrupt"):
        train, test = load_synthetic_core50(SMALL, cache_dir=tmp_path)
    np.testing.assert_array_equal(train.images, small_core50[0].images)
    np.testing.assert_array_equal(test.images, small_core50[1].images)
    # ... and the file was rewritten, so the next load is clean.
    assert synthetic._read_checked(path, SMALL_EXPECTED) is not None


def test_cache_with_wrong_shapes_is_regenerated(tmp_path):
    config = SyntheticConfig(res=16, frames=1, pretrain_classes=2, pretrain_per_class=3)
    path = synthetic.pretrain_cache_path(config, tmp_path)
    tmp_path.mkdir(exist_ok=True)
    np.savez(path, images=np.zeros((6, 8, 8, 3), np.uint8), labels=np.zeros(6, np.int64))
    with pytest.warns(UserWarning):
        corpus = load_pretrain_corpus(config, cache_dir=tmp_path)
    assert corpus.images.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(corpus.images, generate_pretrain_corpus(config).images)


def test_pretrain_corpus_structure_and_disjoint():
    corpus = generate_pretrain_corpus(SMALL)
    assert corpus.images.shape == (6 * 12, 32, 32, 3)
    assert np.bincount(corpus.labels).tolist() == [12] * 6
    assert corpus.frames.max() < synthetic.PRETRAIN_CLIP_FRAMES
    assert corpus.sessions.min() >= 1
    bench = synthetic.object_specs(SMALL.seed)
    pretrain = synthetic.pretrain_object_specs(SMALL.seed, 200)
    assert len({spec.shape for spec in pretrain}) > 10  # also shapes the benchmark lacks
    for spec in pretrain:
        assert spec not in bench
        assert not any(synthetic._same_object(spec, other) for other in bench)
    # Its environments are not the benchmark's sessions.
    sessions = synthetic.session_specs(SMALL.seed)
    assert not set(synthetic.pretrain_env_specs(SMALL.seed)) & set(sessions)


def test_sessions_shift_the_input_distribution(small_core50):
    train, _ = small_core50
    # Mean colour of each session's images: sessions differ in background and lighting.
    means = np.stack([
        train.images[train.sessions == s].reshape(-1, 3).mean(0) for s in TRAIN_SESSIONS
    ])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)
    off_diagonal = distances[~np.eye(len(TRAIN_SESSIONS), dtype=bool)]
    assert off_diagonal.min() > 3  # 8-bit levels
    assert np.median(off_diagonal) > 15


def test_videos_are_smooth(small_core50):
    """Consecutive frames are much closer than frames of other videos."""
    config = SyntheticConfig(seed=1, res=32, frames=12)
    train, _ = generate_core50(config)
    images = train.images.astype(np.float32).reshape(400, 12, -1)
    consecutive = np.abs(images[:, 1:] - images[:, :-1]).mean()
    rng = np.random.default_rng(0)
    other = images[rng.permutation(400)]
    random_pairs = np.abs(images - other).mean()
    assert consecutive < 0.35 * random_pairs
    # ... yet the object does move: frames are not copies of each other.
    assert np.abs(images[:, -1] - images[:, 0]).mean() > consecutive


def test_objects_in_a_category_differ_but_twins_are_close():
    specs = synthetic.object_specs(0)
    for category in range(10):
        members = specs[category * 5 : category * 5 + 5]
        assert len(set(members)) == 5
        assert members[1].texture == members[0].texture  # near-twin
        gap = np.linalg.norm(
            synthetic._object_vector(members[1]) - synthetic._object_vector(members[0])
        )
        assert 0 < gap < 0.6


@pytest.mark.parametrize(
    "kwargs",
    [{"res": 8}, {"res": 10_000}, {"frames": 0}, {"test_frames": 0}, {"seed": -1},
     {"res": 32.0}, {"frames": True}, {"pretrain_classes": 1}, {"pretrain_per_class": 0}],
)
def test_validation(kwargs):
    with pytest.raises(TinyclError):
        SyntheticConfig(**kwargs)


def test_res_128_supported():
    rng = np.random.default_rng(0)
    video = synthetic.render_video(
        synthetic.object_specs(0)[0], synthetic.session_specs(0)[0], 2, 128, rng
    )
    assert video.shape == (2, 128, 128, 3) and video.dtype == np.uint8
    assert video.std() > 10
