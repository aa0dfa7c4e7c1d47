"""Issue 7: runs killed with SIGKILL and resumed end exactly like uninterrupted ones; bad
checkpoints, diverging training and bad data stop with one line and exit code 2."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import cli, read_summary, small_run_args

from tinycl.train.checkpoint import FILE_NAME

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")


def metrics(out):
    """metrics.jsonl without its wall times."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("wall_seconds_batch")
    return records


def count_lines(path):
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def start(args):
    return subprocess.Popen([sys.executable, "-m", "tinycl", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))


def kill_when(proc, out, lines, timeout_s=120.0):
    """SIGKILL ``proc`` once metrics.jsonl has ``lines`` lines (0: once config.toml exists)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = count_lines(out / "metrics.jsonl") >= lines if lines else (out / "config.toml").exists()
        if ready or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()


@pytest.fixture(scope="module")
def reference(weights_file, tmp_path_factory):
    """An uninterrupted run without checkpoints."""
    out = tmp_path_factory.mktemp("ref") / "run"
    code, _, err = cli(*small_run_args(weights_file, out, "--eval-every", 3))
    assert code == 0, err
    return out


# Kill points: right after start (before any checkpoint), between checkpoints, and twice in
# one run (the second time while resuming).
@pytest.mark.parametrize("kills", [(0,), (5,), (4, 17)])
def test_sigkill_then_resume_equals_uninterrupted(weights_file, reference, tmp_path, kills):
    out = tmp_path / "run"
    args = small_run_args(weights_file, out, "--eval-every", 3, "--checkpoint-every", 2)
    kill_when(start(args), out, kills[0])
    for lines in kills[1:]:
        kill_when(start(["run", "--resume", out, "--quiet"]), out, lines)
    assert not (out / "summary.json").exists()
    code, _, err = cli("run", "--resume", out, "--quiet")
    assert code == 0, err
    assert read_summary(out) == read_summary(reference)
    assert metrics(out) == metrics(reference)
    assert len(metrics(out)) == 27  # batches 0, 3, ..., 78 of NICv2-79


def test_sparse_random_run_resumes_with_its_channel_generator(weights_file, tmp_path):
    """The random sparse policy draws channels from a torch generator: it is checkpointed too."""
    sparse = ("--sparse", "20=0.5,22=0.5,24=0.5", "--sparse-policy", "random", "--eval-every", 5)
    ref = tmp_path / "ref"
    assert cli(*small_run_args(weights_file, ref, *sparse))[0] == 0
    out = tmp_path / "run"
    kill_when(start(small_run_args(weights_file, out, *sparse, "--checkpoint-every", 3)), out, 4)
    code, _, err = cli("run", "--resume", out, "--quiet")
    assert code == 0, err
    assert read_summary(out) == read_summary(ref)
    assert metrics(out) == metrics(ref)


def test_resume_of_a_finished_run_rewrites_its_outputs(weights_file, tmp_path):
    out = tmp_path / "run"
    assert cli(*small_run_args(weights_file, out, "--eval-every", 20, "--checkpoint-every", 50))[0] == 0
    first = read_summary(out)
    (out / "summary.json").unlink()
    code, _, err = cli("run", "--resume", out)  # not --quiet: the note says what happened
    assert code == 0 and "already complete" in err
    assert read_summary(out) == first
    # A new run in the folder replaces the finished checkpoint without complaint.
    assert cli(*small_run_args(weights_file, out, "--eval-every", 20))[0] == 0
    assert not (out / FILE_NAME).exists()


def corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x40
    elif how == "truncate":
        data = data[: len(data) - 1000]
    elif how == "version":
        data[8] = 99
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how, message", [
    ("flip", "is corrupted: its checksum does not match"),
    ("truncate", "is truncated"),
    ("version", "has format version 99; this tinycl reads version 1"),
])
def test_damaged_checkpoint_is_refused_and_kept(weights_file, tmp_path, how, message):
    out = tmp_path / "run"
    kill_when(start(small_run_args(weights_file, out, "--checkpoint-every", 2, "--eval-every", 3)), out, 6)
    ckpt = out / FILE_NAME
    corrupt(ckpt, how)
    damaged = ckpt.read_bytes()
    code, _, err = cli("run", "--resume", out, "--quiet")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"tinycl: error: checkpoint {ckpt} ")
    assert message in err
    assert ckpt.read_bytes() == damaged  # nothing written over it
    # A new run there refuses too rather than deleting what may be someone's progress.
    code, _, err = cli(*small_run_args(weights_file, out))
    assert code == 2 and "delete it to start a new run" in err


def test_new_run_refuses_to_overwrite_an_unfinished_checkpoint(weights_file, tmp_path):
    out = tmp_path / "run"
    kill_when(start(small_run_args(weights_file, out, "--checkpoint-every", 2)), out, 4)
    before = (out / FILE_NAME).read_bytes()
    code, _, err = cli(*small_run_args(weights_file, out))
    assert code == 2
    assert err == f"tinycl: error: {out / FILE_NAME} holds an unfinished run: continue it with --resume {out}, " \
                  "or choose another --out\n"
    assert (out / FILE_NAME).read_bytes() == before


def test_resume_errors(weights_file, tmp_path):
    code, _, err = cli("run", "--resume", tmp_path / "nowhere")
    assert code == 2 and err == f"tinycl: error: --resume {tmp_path / 'nowhere'}: no such run directory\n"
    code, _, err = cli("run", "--resume", tmp_path)
    assert code == 2 and "holds no config.toml" in err
    code, _, err = cli("run", "--resume", tmp_path, "--bits", 4)
    assert code == 2 and err == "tinycl: error: --resume continues with the run's own config.toml; drop --bits\n"
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "r", "--checkpoint-every", -1))
    assert code == 2 and err == "tinycl: error: --checkpoint-every must be >= 0, got -1\n"


def test_checkpoint_of_another_config_is_refused(weights_file, tmp_path):
    out = tmp_path / "run"
    kill_when(start(small_run_args(weights_file, out, "--checkpoint-every", 2)), out, 4)
    text = (out / "config.toml").read_text().replace("replays = 60", "replays = 61")
    (out / "config.toml").write_text(text)
    code, _, err = cli("run", "--resume", out, "--quiet")
    assert code == 2
    assert err == (f"tinycl: error: checkpoint {out / FILE_NAME} was written by another configuration than "
                   "this run's config.toml\n")


def test_diverging_loss_stops_with_batch_and_step_and_keeps_checkpoint(weights_file, tmp_path, monkeypatch):
    """The guard stops at the first non-finite loss. The loss is made NaN from batch 4 on by
    poisoning that batch's latents, so the failing batch does not depend on float rounding (a
    huge learning rate diverged at batch 4 with AVX2 kernels and at batch 9 with AVX-512)."""
    from tinycl.train.learner import Learner

    fit = Learner.fit

    def poisoned_fit(self, latents, labels, index=0):
        return fit(self, latents * float("nan") if index >= 4 else latents, labels, index)

    monkeypatch.setattr(Learner, "fit", poisoned_fit)
    out = tmp_path / "run"
    code, _, err = cli(*small_run_args(weights_file, out, "--checkpoint-every", 2))
    assert code == 2
    assert err == ("tinycl: error: the loss is nan at batch 4, step 0 (epoch 0, iteration 0): training stopped; "
                   f"the last checkpoint, after batch 3, is intact: {out / FILE_NAME}\n")
    assert not (out / "summary.json").exists()
    # The checkpoint after batch 3 is whole and resumable (it stops again at batch 4).
    code, _, err2 = cli("run", "--resume", out, "--quiet")
    assert code == 2 and "the loss is nan at batch 4, step 0" in err2


def test_nan_weights_are_refused_when_loaded(weights_file, tmp_path):
    state = torch.load(weights_file, weights_only=True)
    key = next(k for k in state if k.endswith("weight") and state[k].dim() == 4)
    state[key][0].fill_(float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    code, _, err = cli(*small_run_args(bad, tmp_path / "run", "--frozen", "float", "--bits", 32))
    assert code == 2
    assert err == f"tinycl: error: weights file {bad}: tensor {key!r} holds NaN or Inf values\n"


def test_non_finite_frozen_stage_output_stops_the_run(weights_file, tmp_path, monkeypatch):
    """Finite weights can still overflow: the frozen stage's output is checked before training."""
    from tinycl.train import experiment

    encode = experiment.LatentEncoder.encode
    monkeypatch.setattr(experiment.LatentEncoder, "encode",
                        lambda self, images: tuple(t * float("inf") for t in encode(self, images)))
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "run", "--frozen", "float", "--bits", 32,
                                       "--no-latent-cache"))
    assert code == 2 and err.count("\n") == 1
    assert "the frozen stage's output for the test set holds" in err


class Evil:
    """A pickle that would run code when loaded without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_refused_not_executed(weights_file, tmp_path):
    from tinycl.train.checkpoint import HEADER, MAGIC, encode_checkpoint

    marker = tmp_path / "pwned"
    evil_weights = tmp_path / "evil.pt"
    torch.save({"features.0.weight": Evil(marker)}, evil_weights)
    code, _, err = cli(*small_run_args(evil_weights, tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1 and str(evil_weights) in err
    assert not marker.exists()

    # A checkpoint with a valid header and checksum around a malicious payload.
    out = tmp_path / "ckrun"
    kill_when(start(small_run_args(weights_file, out, "--checkpoint-every", 2)), out, 4)
    payload = encode_checkpoint({"learner": Evil(marker)})[HEADER.size:]
    import hashlib

    (out / FILE_NAME).write_bytes(HEADER.pack(MAGIC, 1, len(payload), hashlib.sha256(payload).digest()) + payload)
    code, _, err = cli("run", "--resume", out, "--quiet")
    assert code == 2 and err.count("\n") == 1
    assert f"checkpoint {out / FILE_NAME} refused: it holds more than tensors and plain data" in err
    assert not marker.exists()
