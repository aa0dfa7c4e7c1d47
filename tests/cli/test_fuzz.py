"""Issue 7: fuzzed config files and CORe50 filelists never produce a traceback. Every failure is
one ``TinyclError`` line and exit code 2."""

import dataclasses

import numpy as np
import pytest
import tomli_w
from conftest import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tinycl.cli.run import resolve_config
from tinycl.config import SECTIONS, RunConfig
from tinycl.data.sources import checked, from_core50
from tinycl.errors import TinyclError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

SECTION_KEYS = {name: [f.name for f in dataclasses.fields(getattr(RunConfig(), name))] for name in SECTIONS}
TOP_KEYS = [f.name for f in dataclasses.fields(RunConfig()) if f.name not in SECTIONS]

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.text(max_size=12), st.sampled_from(["mobilenet_v1", "ci", "clip", "int8", "topk", "20=0.5"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))


@st.composite
def config_documents(draw):
    doc = {}
    for key in draw(st.lists(st.sampled_from([*TOP_KEYS, "bogus"]), max_size=3)):
        doc[key] = draw(values)
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "extra"]), max_size=4)):
        if draw(st.booleans()):
            keys = draw(st.lists(st.sampled_from([*SECTION_KEYS.get(section, []), "nope"]), max_size=4))
            doc[section] = {key: draw(values) for key in keys}
        else:
            doc[section] = draw(values)
    return doc


def expect_one_line_exit_2(args):
    code, out, err = cli(*args)
    assert code == 2, (code, err)
    assert err.startswith("tinycl: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out


@FUZZ
@given(doc=config_documents())
def test_fuzzed_config_files(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(tomli_w.dumps(doc))
    try:
        cfg = resolve_config(str(path), {})
    except TinyclError:
        # The same file through the CLI: one line, exit code 2, and no run directory.
        out = path.parent / "out"
        expect_one_line_exit_2(["run", "--config", path, "--out", out, "--quiet"])
        assert not out.exists()
        return
    assert isinstance(cfg, RunConfig)  # valid: every value passed validate()


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_fuzzed_config_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        resolve_config(str(path), {})
    except TinyclError:
        return


RES = 16
OBJECTS = (0, 1, 5, 6)


def rel(session, obj, frame):
    return f"s{session}/o{obj + 1}/C_{session:02d}_{obj + 1:02d}_{frame:03d}.png"


@pytest.fixture(scope="module")
def core50_tree(tmp_path_factory):
    """A few 16x16 PNGs in the official layout and a valid NIC_v2_79 run 0 to damage."""
    root = tmp_path_factory.mktemp("core50")
    for s in (1, 2, 3):
        for o in OBJECTS:
            path = root / "core50_128x128" / rel(s, o, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((RES, RES, 3), 10 * s + o, np.uint8)).save(path)
    return root


line_parts = st.one_of(
    st.sampled_from([rel(s, o, 0) for s in (1, 2, 3) for o in OBJECTS] + ["s9/o9/C_09_09_000.png", "../x.png",
                                                                          "/etc/passwd", "s1/o1/img.png"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
)
labels = st.one_of(st.integers(-3, 60), st.just(10**30), st.text(max_size=4))
lines = st.lists(st.tuples(line_parts, labels).map(lambda t: f"{t[0]} {t[1]}"), max_size=6)
filelists = st.one_of(lines.map(lambda ls: "\n".join(ls).encode()), st.binary(max_size=64))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(train=filelists, test=filelists, which=st.sampled_from(["train", "test", "both"]))
def test_fuzzed_core50_filelists(core50_tree, weights_file, tmp_path_factory, train, test, which):
    root = tmp_path_factory.mktemp("fl")
    (root / "core50_128x128").symlink_to(core50_tree / "core50_128x128")
    run = root / "NIC_v2_79" / "run0"
    run.mkdir(parents=True)
    good = "".join(f"{rel(1, o, 0)} {o}\n" for o in OBJECTS).encode()
    (run / "train_batch_00_filelist.txt").write_bytes(train if which != "test" else good)
    (run / "test_filelist.txt").write_bytes(test if which != "train" else good)
    try:
        source = checked(from_core50(str(root), "nicv2_79", 0, False))
        for i in range(source.num_batches):
            source.batch(i)
        list(source.test_chunks())
    except TinyclError:
        expect_one_line_exit_2(["run", "--benchmark", "core50", "--data-root", root, "--res", RES,
                                "--scenario", "nicv2_79", "--weights", weights_file, "--out", root / "out", "--quiet"])
