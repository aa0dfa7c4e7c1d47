"""Issue 14: one owner per run directory, and a finished run replaced all at once or not at all.

Fault injection with real processes: concurrent runs on one --out (both orders), SIGKILL and
SIGINT at several points of a run that replaces a finished one, the NaN guard, an edited
config.toml on --resume of a finished run. After every failure the previous run is byte for
byte what it was.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import cli, read_summary, small_run_args

from tinycl.report.rundir import RunDirectory
from tinycl.train.checkpoint import FILE_NAME

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock / SIGKILL")


def tree_digest(folder):
    """Every file under ``folder`` (relative name -> sha256): equal iff byte-identical."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def default_sigint() -> None:
    """In the child: SIGINT's default action. A test runner started in the background of a
    non-interactive shell (``cmd &``) inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the SIGINT cases would test nothing."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def start(args):
    return subprocess.Popen([sys.executable, "-m", "tinycl", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ), preexec_fn=default_sigint)


def wait_for(predicate, proc, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not predicate() and proc.poll() is None:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def finished(weights_file, tmp_path_factory):
    """A finished run (with a final checkpoint) and the digest of its files."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code, _, err = cli(*small_run_args(weights_file, out, "--checkpoint-every", 20))
    assert code == 0, err
    return out, tree_digest(out)


def test_a_second_run_on_the_same_out_is_refused_naming_the_owner(weights_file, tmp_path):
    out = tmp_path / "run"
    first = start(small_run_args(weights_file, out))
    rundir = RunDirectory(out)
    wait_for(lambda: rundir.lock_path.exists() and rundir.lock_path.read_text().strip() == str(first.pid), first)
    code, _, err = cli(*small_run_args(weights_file, out))  # the second, while the first runs
    assert code == 2
    assert err == (f"tinycl: error: run directory {out} is in use by another tinycl run (pid {first.pid}); "
                   "wait for it or choose another --out\n")
    assert first.wait() == 0, first.stderr.read().decode()
    # The first run's metrics are whole: one JSON line per batch, nothing interleaved.
    assert len((out / "metrics.jsonl").read_text().splitlines()) == read_summary(out)["num_batches"]


def test_the_lock_dies_with_its_owner(weights_file, tmp_path):
    out = tmp_path / "run"
    proc = start(small_run_args(weights_file, out, "--checkpoint-every", 5))
    wait_for(lambda: (out / FILE_NAME).exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, _, err = cli("run", "--resume", out, "--quiet")  # no stale lock: the owner is gone
    assert code == 0, err


@pytest.mark.parametrize("when", ["config", "metrics", "checkpoint", "late"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_an_interrupted_replacement_leaves_the_finished_run_intact(finished, weights_file, sig, when):
    out, before = finished
    staging = RunDirectory(out).staging
    proc = start(small_run_args(weights_file, out, "--checkpoint-every", 30, "--seed", 1))
    ready = {"config": lambda: (staging / "config.toml").exists(),
             "metrics": lambda: (staging / "metrics.jsonl").exists(),
             "checkpoint": lambda: (staging / FILE_NAME).exists(),
             "late": lambda: (staging / "metrics.jsonl").exists()
             and (staging / "metrics.jsonl").read_bytes().count(b"\n") >= 70}[when]
    wait_for(ready, proc)
    proc.send_signal(sig)
    proc.wait()
    assert proc.returncode != 0
    assert tree_digest(out) == before
    # A staging folder with a checkpoint is an unfinished run: refused, then resumable.
    if (staging / FILE_NAME).exists():
        code, _, err = cli(*small_run_args(weights_file, out, "--seed", 2))
        assert code == 2 and "holds an unfinished run: continue it with --resume" in err
        assert tree_digest(out) == before
        code, _, err = cli("run", "--resume", out, "--quiet")
        assert code == 0, err
        assert read_summary(out)["seed"] == 1 and not staging.exists()
        # restore the fixture's run for the next case
        code, _, err = cli(*small_run_args(weights_file, out, "--checkpoint-every", 20))
        assert code == 0, err
        finished[1].clear()
        finished[1].update(tree_digest(out))


def test_a_diverging_replacement_leaves_the_finished_run_intact(finished, weights_file, monkeypatch):
    from tinycl.train.learner import Learner

    out, before = finished
    fit = Learner.fit
    monkeypatch.setattr(Learner, "fit", lambda self, x, y, i=0: fit(self, x * float("nan") if i >= 3 else x, y, i))
    code, _, err = cli(*small_run_args(weights_file, out, "--seed", 3))
    assert code == 2 and "the loss is nan at batch 3" in err
    assert tree_digest(out) == before
    assert not RunDirectory(out).staging.exists()  # nothing resumable was left: it is cleaned up


def test_a_finished_replacement_is_swapped_in_whole(finished, weights_file, tmp_path):
    out, _ = finished
    copy = tmp_path / "copy"
    code, _, err = cli(*small_run_args(weights_file, copy, "--seed", 4))
    assert code == 0, err
    code, _, err = cli(*small_run_args(weights_file, out, "--seed", 4))
    assert code == 0, err
    assert read_summary(out) == read_summary(copy)
    assert not (out / FILE_NAME).exists()  # the old run's checkpoint went with the old run
    assert set(tree_digest(out)) == set(tree_digest(copy))


def test_resume_of_a_finished_run_with_an_edited_config_is_refused(weights_file, tmp_path):
    out = tmp_path / "run"
    code, _, err = cli(*small_run_args(weights_file, out, "--checkpoint-every", 20))
    assert code == 0, err
    before = tree_digest(out)
    config = out / "config.toml"
    config.write_text(config.read_text().replace('name = "mobilenet_v1"', 'name = "mobilenet_v1"\n# edited')
                      .replace("replays = 60", "replays = 61"))
    before["config.toml"] = hashlib.sha256(config.read_bytes()).hexdigest()
    code, _, err = cli("run", "--resume", out, "--quiet")
    assert code == 2 and "was written by another configuration than this run's config.toml" in err
    assert tree_digest(out) == before
