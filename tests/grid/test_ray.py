"""``--executor ray`` on a Ray instance the grid starts itself: the serial executor's numbers, a
killed task retried, every socket of every Ray process on loopback, nothing left behind.

Ray is in the [test] extra. Without it these tests skip, except with CI=true, where they fail:
a CI run must not pass by skipping the Ray checks.
"""

import os
import tempfile
import time
from pathlib import Path

import pytest
from gridtools import GRID, RUNS, Watcher, alive, cli, computed, is_loopback, is_unspecified

from tinycl.grid.ray_support import ray_available


@pytest.fixture(scope="module", autouse=True)
def need_ray():
    if ray_available():
        return
    message = 'Ray is not installed: pip install -e ".[test]" (or ".[ray]") installs it'
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(message)
    pytest.skip(message)


def ray_leftovers() -> dict:
    """What Ray may leave on this machine: a token in the home folder, its default session folder,
    tinycl's own session folders."""
    token = Path.home() / ".ray" / "auth_token"
    temp = Path(tempfile.gettempdir())
    return {"token": token.read_bytes() if token.exists() else None, "tmp_ray": (temp / "ray").exists(),
            "tinycl_ray": sorted(p.name for p in temp.glob("tinycl-ray-*"))}


def test_ray_gives_the_serial_numbers_listens_on_loopback_only_and_retries_a_killed_task(serial_grid, tmp_path):
    reference, base = serial_grid
    out = tmp_path / "grid"
    before = ray_leftovers()
    try:
        # The first Ray worker seen running a cell is SIGKILLed (as a lost node would lose it).
        with Watcher(victim="ray::attempt_cell", kills=1, sockets=True) as watcher:
            code, stdout, stderr = cli("sweep", "--config", base, *GRID, "--executor", "ray", "--workers", 2,
                                       "--out", out)
        assert code == 0, stderr
        assert stdout.splitlines()[0].endswith(
            "3 to run on ray: a local Ray instance on 127.0.0.1, 2 CPUs, 2 runs at a time × 1 thread; estimated "
            "time: no estimate yet (no finished run in this folder)")
        # same numbers, bytes of the deployment included, as the serial executor
        for name in RUNS:
            assert computed(out / name) == computed(reference / name), name
        # the killed task came back
        assert len(watcher.killed) == 1
        lost = [line for line in stdout.splitlines() if "worker lost" in line and "retrying" in line]
        assert len(lost) == 1 and "WorkerCrashedError" in lost[0] and "retrying, try 2 of 3" in lost[0], stdout
        assert "grid: 3 runs: 3 finished now, 0 skipped (finished before), 0 failed, 0 never finished" in stdout
        # Loopback only: every TCP/UDP socket of the driver (this process) and of every Ray process
        # below it. Positive control: Ray's GCS server and raylet were seen listening.
        listening = [s for s in watcher.sockets if s[3] == "LISTEN"]
        assert any("gcs_server" in s[1] for s in listening) and any("raylet" in s[1] for s in listening), listening
        beyond = [s for s in watcher.sockets
                  if not is_loopback(s[4][0]) or not (is_loopback(s[5][0]) or is_unspecified(s[5][0]))]
        assert not beyond, f"sockets beyond 127.0.0.0/8: {beyond}"
        # Ray stopped: none of its processes is left running.
        ray_pids = [pid for pid, command in watcher.pids.items() if "ray" in command and pid != os.getpid()]
        assert ray_pids
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in ray_pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in ray_pids if alive(pid)]
        # no token in ~/.ray, no /tmp/ray, tinycl's session folder removed
        assert ray_leftovers() == before
    finally:
        cleanup(before)


def cleanup(before: dict) -> None:
    """Remove what a failed run of the test above may have left and the machine did not have."""
    import shutil

    token = Path.home() / ".ray" / "auth_token"
    if before["token"] is None and token.exists():
        token.unlink()
    temp = Path(tempfile.gettempdir())
    if not before["tmp_ray"]:
        shutil.rmtree(temp / "ray", ignore_errors=True)
    for folder in temp.glob("tinycl-ray-*"):
        if folder.name not in before["tinycl_ray"]:
            shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("command", ["sweep", "sparse-sweep"])
def test_an_unreachable_ray_address_is_one_line_and_exit_2_before_anything_runs(tmp_path, command):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code, stdout, stderr = cli(command, "--executor", "ray", "--ray-address", address, "--out", tmp_path / "g")
    assert (code, stdout) == (2, "")
    assert stderr == (f"tinycl: error: --ray-address {address}: cannot reach a Ray cluster there (Connection "
                      "refused); start one with `ray start --head`, or drop --ray-address to run on a local Ray "
                      "instance\n")
    assert time.monotonic() - started < 10 and not (tmp_path / "g").exists()


def test_a_malformed_ray_address_is_one_line_and_exit_2(tmp_path):
    code, _, stderr = cli("sweep", "--executor", "ray", "--ray-address", "head-node", "--out", tmp_path / "g")
    assert code == 2
    assert stderr.startswith("tinycl: error: --ray-address 'head-node' must be HOST:PORT") and stderr.count("\n") == 1
