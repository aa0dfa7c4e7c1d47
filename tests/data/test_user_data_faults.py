"""Issue 14, class 6: user data that would be silently wrong or crash is refused in one line
(or converted exactly, where an exact conversion exists)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from tinycl.data.user import MAX_CLASSES, load_arrays, load_folder
from tinycl.errors import TinyclError
from tinycl.models.weights import read_state_dict

RES = 16


def folder(root, images=None):
    """root/{train,test}/a/0.png with RGB noise (or the given PIL images in train/a)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (root / split / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(root / split / "a" / "0.png")
    for name, im in (images or {}).items():
        im.save(root / "train" / "a" / name)
    return root


def refused(match, call, *args):
    with pytest.raises(TinyclError, match=match) as info:
        call(*args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("mode", "ok"), [("L", True), ("P", True), ("1", True), ("RGBA", True),
                                          ("I;16", False), ("F", False), ("CMYK", False)])
def test_pixel_formats_convert_exactly_or_are_refused(tmp_path, mode, ok):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 255, (RES, RES, 3), dtype=np.uint8))
    im = {"L": rgb.convert("L"), "P": rgb.convert("P"), "1": rgb.convert("1"), "RGBA": rgb.convert("RGBA"),
          "I;16": Image.fromarray(np.full((RES, RES), 40000, np.uint16)),
          "F": Image.fromarray(np.full((RES, RES), 0.5, np.float32)), "CMYK": rgb.convert("CMYK")}[mode]
    # PNG has no float or CMYK form: those are written as TIFF, then given a .png name (tinycl
    # reads png/jpg/jpeg/bmp names; PIL identifies the content, not the name).
    name = "x.tiff" if mode in ("F", "CMYK") else "x.png"
    root = folder(tmp_path, {name: im})
    if name == "x.tiff":
        os.replace(root / "train" / "a" / name, root / "train" / "a" / "x.png")
    if ok:
        train, _ = load_folder(root, RES)
        assert len(train) == 2
        assert np.array_equal(train.images[1], np.asarray(im.convert("RGB")))
    else:
        refused("has no exact 8-bit RGB form|pixel mode", load_folder, root, RES)


def test_transparency_is_refused(tmp_path):
    rgba = np.full((RES, RES, 4), 200, np.uint8)
    rgba[0, 0, 3] = 10
    refused("is partly transparent", load_folder, folder(tmp_path, {"x.png": Image.fromarray(rgba)}), RES)


def test_a_file_that_is_not_an_image(tmp_path):
    root = folder(tmp_path)
    (root / "train" / "a" / "fake.png").write_text("this is text")
    refused(r"cannot read image .*fake.png: UnidentifiedImageError", load_folder, root, RES)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    root = folder(tmp_path)
    # A 20000 x 20000 PNG of one colour compresses to a few KB; decoding it would take 1.2 GB.
    Image.new("L", (20000, 20000)).save(root / "train" / "a" / "bomb.png", optimize=True)
    refused(r"bomb.png is 20000x20000, the model expects 16x16|bomb.png: DecompressionBombError", load_folder, root,
            RES)


def test_symbolic_links_are_refused(tmp_path):
    root = folder(tmp_path / "d")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "train" / "b")
    refused("is a symbolic link", load_folder, root, RES)


def test_nesting_deeper_than_documented_is_refused(tmp_path):
    root = folder(tmp_path)
    deep = root / "train" / "a" / "s1" / "extra"
    deep.mkdir(parents=True)
    Image.new("RGB", (RES, RES)).save(deep / "0.png")
    refused("is nested too deep", load_folder, root, RES)


def test_names_that_are_not_utf8_reach_the_error_line_escaped(tmp_path, capsys):
    from tinycl.cli import main

    root = folder(tmp_path)
    bad = os.path.join(os.fsencode(root / "train" / "a"), b"\xff\xfe.png")
    with open(bad, "wb") as fh:
        fh.write(b"not an image")
    with pytest.raises(SystemExit) as info:
        main(["run", "--benchmark", "folder", "--data-root", str(root), "--res", str(RES), "--out",
              str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "\\udcff\\udcfe.png" in err


def arrays(path, train_images=None, train_labels=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, RES, RES, 3), dtype=np.uint8) if train_images is None else train_images
    labels = np.arange(len(images)) % 3 if train_labels is None else train_labels
    np.savez(path, train_images=images, train_labels=labels,
             test_images=rng.integers(0, 255, (3, RES, RES, 3), dtype=np.uint8), test_labels=np.arange(3))
    return path


def test_empty_split_and_absurd_labels_are_refused(tmp_path):
    refused(r"\[train\]: holds no images", load_arrays,
            arrays(tmp_path / "a.npz", np.zeros((0, RES, RES, 3), np.uint8), np.zeros(0, np.int64)), RES)
    refused(rf"label 1000000 is too large: .*at most {MAX_CLASSES}.* these 2 distinct labels",
            load_arrays, arrays(tmp_path / "b.npz", train_labels=np.array([0, 1000000] * 3)), RES)


def test_a_file_that_is_not_an_npz(tmp_path):
    path = tmp_path / "x.npz"
    np.save(tmp_path / "x.npy", np.zeros(3))
    os.replace(tmp_path / "x.npy", path)
    with pytest.raises(TinyclError) as info:
        load_arrays(path, RES)
    assert "not a readable .npz archive" in str(info.value) and "allow_pickle" not in str(info.value)


@pytest.mark.parametrize(("tensor", "problem"), [
    (torch.zeros(3, 3).to_sparse(), "is sparse_coo, not a dense tensor"),
    (torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8), "is quantized"),
    (torch.zeros(3, dtype=torch.complex64), "has dtype torch.complex64"),
    (torch.tensor([1.0, float("inf")]), "holds NaN or Inf values"),
])
def test_weights_that_are_not_plain_dense_cpu_tensors(tmp_path, tensor, problem):
    path = tmp_path / "w.pt"
    torch.save({"features.0.weight": tensor}, path)
    refused(f"tensor 'features.0.weight' {problem}", read_state_dict, path)
