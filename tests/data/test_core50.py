"""The CORe50 reader on a tiny fake copy in the official layout (8x8 PNGs, 2 frames per video)."""

import os
import pickle
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from tinycl.data.core50 import (
    Core50Layout,
    Sample,
    extract_npz_images,
    iter_images,
    load_core50_protocol,
    parse_name,
    read_paths_pickle,
)
from tinycl.errors import TinyclError

RES = 8
FRAMES = 2
TRAIN_SESSIONS = (1, 2, 4, 5, 6, 8, 9, 11)


def pixel(session, obj, frame):
    """Each image is filled with (session, object, frame) so decoding can be checked."""
    return np.full((RES, RES, 3), (session, obj, frame), np.uint8)


def rel(session, obj, frame):
    return f"s{session}/o{obj + 1}/C_{session:02d}_{obj + 1:02d}_{frame:03d}.png"


def all_paths():
    return [rel(s, o, f) for s in range(1, 12) for o in range(50) for f in range(FRAMES)]


def write_filelist(path, samples):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {label}\n" for p, label in samples))


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("core50")
    for p in all_paths():
        s, o, f = parse_name(p)
        (root / "core50_128x128" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixel(s, o, f)).save(root / "core50_128x128" / p)
    # Official-format filelists: NIC_v2_79 run 0 and 1 (3 small batches each), NI run 0.
    test = [(rel(s, o, f), o) for s in (3, 7, 10) for o in range(50) for f in range(FRAMES)]
    for run in (0, 1):
        d = root / "NIC_v2_79" / f"run{run}"
        write_filelist(d / "train_batch_00_filelist.txt", [(rel(1, o, f), o) for o in range(0, 50, 5)
                                                           for f in range(FRAMES)])
        write_filelist(d / "train_batch_01_filelist.txt", [(rel(2, 1 + run, f), 1 + run) for f in range(FRAMES)])
        write_filelist(d / "train_batch_02_filelist.txt", [(rel(4, 49, f), 49) for f in range(FRAMES)])
        write_filelist(d / "test_filelist.txt", test)
    ni = root / "batches_filelists" / "NI_inc" / "run0"
    for i, s in enumerate(TRAIN_SESSIONS):
        write_filelist(ni / f"train_batch_{i:02d}_filelist.txt", [(rel(s, o, 0), o) for o in range(50)])
    write_filelist(ni / "test_filelist.txt", test)
    return root


def copy_filelists(src, dst):
    shutil.copytree(src / "NIC_v2_79", dst / "NIC_v2_79")


def test_detect_from_image_folder_and_non_square(tree, tmp_path):
    assert Core50Layout.detect(tree / "core50_128x128").root == tree
    (tmp_path / "core50_128x128" / "s1" / "o1").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(tmp_path / "core50_128x128" / rel(1, 0, 0))
    with pytest.raises(TinyclError, match="must be square, .* has 8x6"):
        Core50Layout.detect(tmp_path).resolution()


def test_parse_name():
    assert parse_name("s11/o50/C_11_50_299.png") == (11, 49, 299)
    with pytest.raises(TinyclError, match="not a CORe50 image name"):
        parse_name("s1/o1/img.png")


def test_official_filelists(tree):
    proto = load_core50_protocol(tree, "nicv2_79", run=0)
    assert proto.note is None and proto.source == "NIC_v2_79/run0"
    assert proto.res == RES and proto.num_classes == 50 and proto.num_batches == 3
    assert [len(b) for b in proto.train_batches] == [20, 2, 2]
    assert sorted({s.label for s in proto.train_batches[0]}) == list(range(0, 50, 5))
    assert proto.train_batches[0][0] == Sample("s1/o1/C_01_01_000.png", 0)
    assert len(proto.test) == 300 and proto.test[-1] == Sample(rel(10, 49, 1), 49)
    assert load_core50_protocol(tree, "nicv2_79", run=1).train_batches[1][0].label == 2
    ni = load_core50_protocol(tree, "ni", run=0)
    assert ni.num_batches == 8 and all(len(b) == 50 for b in ni.train_batches)


def test_category_labels_and_reduced_test(tree):
    proto = load_core50_protocol(tree, "nicv2_79", run=0, labels="category", reduced_test=True)
    assert proto.num_classes == 10
    assert sorted({s.label for s in proto.train_batches[0]}) == list(range(10))
    assert proto.train_batches[2][0].label == 49 // 5
    full = load_core50_protocol(tree, "nicv2_79", run=0).test
    # One frame in 20 of the test list, in filelist order (44,972 -> 2,249 on CORe50).
    assert [s.path for s in proto.test] == [s.path for s in full[::20]]
    assert len(proto.test) == 15 and [s.label for s in proto.test] == [s.label // 5 for s in full[::20]]


def test_generated_nicv2_when_filelists_absent(tree):
    proto = load_core50_protocol(tree, "nicv2_391", run=0)
    assert proto.source == "generated" and "generated" in proto.note and "NIC_v2_391" in proto.note
    assert proto.num_batches == 391
    batch0 = proto.train_batches[0]
    assert {parse_name(s.path)[0] for s in batch0} == {1}
    assert sorted({s.label for s in batch0}) == list(range(0, 50, 5))
    seen = [s.path for b in proto.train_batches for s in b]
    assert len(seen) == len(set(seen)) == len(TRAIN_SESSIONS) * 50 * FRAMES
    assert all(s.label == parse_name(s.path)[1] for b in proto.train_batches for s in b)
    assert len(proto.test) == 3 * 50 * FRAMES
    assert {parse_name(s.path)[0] for s in proto.test} == {3, 7, 10}
    assert [len(load_core50_protocol(tree, sc).train_batches) for sc in ("nicv2_196", "nc")] == [196, 9]
    other = load_core50_protocol(tree, "nicv2_391", run=1)
    assert [s.path for s in other.train_batches[5]] != [s.path for s in proto.train_batches[5]]


def test_iter_images_chunks_in_order(tree):
    proto = load_core50_protocol(tree, "nicv2_79", run=0)
    samples = proto.train_batches[0] + proto.train_batches[2]
    chunks = list(iter_images(tree, samples, chunk=7))
    assert [len(x) for x, _ in chunks] == [7, 7, 7, 1]
    images = np.concatenate([x for x, _ in chunks])
    labels = np.concatenate([y for _, y in chunks])
    assert images.dtype == np.uint8 and images.shape == (22, RES, RES, 3)
    assert labels.tolist() == [s.label for s in samples]
    for image, sample in zip(images, samples, strict=True):
        assert np.array_equal(image, pixel(*parse_name(sample.path)))
    threaded = np.concatenate([x for x, _ in iter_images(tree, samples, chunk=5, workers=2)])
    assert np.array_equal(threaded, images)


def make_npz(root, tree, compressed=False):
    paths = all_paths()[::-1]  # rows in another order than the tree: lookup goes by path
    x = np.stack([pixel(*parse_name(p)) for p in paths])
    (np.savez_compressed if compressed else np.savez)(root / "core50_imgs.npz", x=x)
    with open(root / "paths.pkl", "wb") as handle:
        pickle.dump(paths, handle, protocol=2)
    copy_filelists(tree, root)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_layout_matches_tree(tree, tmp_path, compressed):
    make_npz(tmp_path, tree, compressed)
    layout = Core50Layout.detect(tmp_path)
    assert layout.image_dir is None and layout.array_file.name == "core50_imgs.npz"
    if not compressed:
        assert isinstance(layout.images_array(), np.memmap)  # stored member mapped in place
    proto = load_core50_protocol(layout, "nicv2_79", run=0)
    assert proto.res == RES and proto.num_batches == 3
    assert (proto.note is not None) == compressed
    samples = proto.train_batches[0] + proto.test[:9]
    from_npz = np.concatenate([x for x, _ in iter_images(layout, samples, chunk=4)])
    from_tree = np.concatenate([x for x, _ in iter_images(tree, samples, chunk=4)])
    assert np.array_equal(from_npz, from_tree)
    if compressed:
        npy = extract_npz_images(tmp_path, chunk=64)
        assert npy.name == "core50_imgs.npy"
        layout = Core50Layout.detect(tmp_path)
        assert layout.array_file == npy and isinstance(layout.images_array(), np.memmap)
        again = np.concatenate([x for x, _ in iter_images(layout, samples, chunk=4)])
        assert np.array_equal(again, from_tree)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_paths_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    np.savez(tmp_path / "core50_imgs.npz", x=np.zeros((1, RES, RES, 3), np.uint8))
    with open(tmp_path / "paths.pkl", "wb") as handle:
        pickle.dump(["s1/o1/C_01_01_000.png", _Payload(marker)], handle)
    with pytest.raises(TinyclError, match=r"refused .*paths.pkl: it references (posix|nt|os)\.system"):
        read_paths_pickle(tmp_path / "paths.pkl")
    with pytest.raises(TinyclError, match="refused"):
        load_core50_protocol(tmp_path, "nicv2_391")
    assert not marker.exists()
    with open(tmp_path / "paths.pkl", "wb") as handle:
        pickle.dump({"a": 1}, handle)
    with pytest.raises(TinyclError, match="does not hold a list of path strings"):
        read_paths_pickle(tmp_path / "paths.pkl")


def test_missing_pieces_are_one_line(tree, tmp_path):
    cases = []
    with pytest.raises(TinyclError) as info:
        Core50Layout.detect(tmp_path / "nowhere")
    cases.append((info, "does not exist"))
    with pytest.raises(TinyclError) as info:
        load_core50_protocol(tmp_path, "nicv2_391")
    cases.append((info, "no CORe50 images in"))
    np.savez(tmp_path / "core50_imgs.npz", x=np.zeros((1, RES, RES, 3), np.uint8))
    with pytest.raises(TinyclError) as info:
        Core50Layout.detect(tmp_path)
    cases.append((info, "needs paths.pkl"))
    (tmp_path / "core50_imgs.npz").unlink()
    # A partial tree: only s1/o1.
    (tmp_path / "core50_128x128" / "s1" / "o1").mkdir(parents=True)
    Image.fromarray(pixel(1, 0, 0)).save(tmp_path / "core50_128x128" / rel(1, 0, 0))
    with pytest.raises(TinyclError) as info:
        load_core50_protocol(tmp_path, "nicv2_391")
    cases.append((info, r"is partial: no images of s1/o2 \(549 of 550"))
    # Filelists that name images the copy lacks.
    copy_filelists(tree, tmp_path)
    with pytest.raises(TinyclError) as info:
        load_core50_protocol(tmp_path, "nicv2_79", run=0)
    cases.append((info, "images named in NIC_v2_79/run0 are not in"))
    with pytest.raises(TinyclError) as info:
        load_core50_protocol(tree, "nicv2_79", run=5)
    cases.append((info, "no filelists for run 5 in .*NIC_v2_79 \\(runs present: 0, 1\\)"))
    (tmp_path / "NIC_v2_79" / "run1" / "train_batch_01_filelist.txt").unlink()
    with pytest.raises(TinyclError) as info:
        load_core50_protocol(tmp_path, "nicv2_79", run=1)
    cases.append((info, "is partial: train_batch_01_filelist.txt missing"))
    (tmp_path / "NIC_v2_79" / "run0" / "test_filelist.txt").unlink()
    with pytest.raises(TinyclError) as info:
        load_core50_protocol(tmp_path, "nicv2_79", run=0)
    cases.append((info, "test_filelist.txt missing"))
    with pytest.raises(TinyclError) as info:
        list(iter_images(tmp_path, [Sample(rel(2, 0, 0), 0)]))
    cases.append((info, "CORe50 image missing"))
    for info, pattern in cases:
        message = str(info.value)
        assert "\n" not in message
        assert re.search(pattern, message), message
        assert "vlomonaco.github.io/core50" in message, message
    with pytest.raises(TinyclError, match="unknown CORe50 scenario"):
        load_core50_protocol(tree, "nicv3")
    with pytest.raises(TinyclError, match="labels must be"):
        load_core50_protocol(tree, "ni", labels="objects")
