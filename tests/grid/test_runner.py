"""The grid runner with the serial and local executors: same numbers, killed workers retried
(bounded), failed runs reported while the grid goes on, finished runs skipped, bad input
refused in one line before anything runs."""

import os
import sys

import pytest
from gridtools import GRID, RUNS, Watcher, base_config, cli, computed

from tinycl.cli.run import resolve_config
from tinycl.grid import GridSettings, run_grid
from tinycl.grid.executors import usable_cores
from tinycl.grid.plan import plan_text


def test_local_pool_gives_the_serial_numbers_and_retries_a_killed_worker(serial_grid, tmp_path):
    reference, base = serial_grid
    out = tmp_path / "grid"
    # The first worker process is SIGKILLed a second after it starts: its run was sent to it at
    # start, so the run dies mid-way and must come back from a fresh worker with the same numbers.
    with Watcher(victim="spawn_main", kills=1, delay_s=1.0) as watcher:
        code, stdout, stderr = cli("sweep", "--config", base, *GRID, "--executor", "local", "--workers", 2,
                                   "--out", out)
    assert code == 0, stderr
    assert len(watcher.killed) == 1
    lines = stdout.splitlines()
    assert lines[0].endswith("3 to run on local: 2 worker processes × 1 thread; estimated time: no estimate yet "
                             "(no finished run in this folder)")
    lost = [line for line in lines if "worker lost" in line and "retrying" in line]
    assert len(lost) == 1 and f"(worker process {watcher.killed[0]} killed by SIGKILL); retrying, try 2 of 3" in lost[0]
    assert "grid: 3 runs: 3 finished now, 0 skipped (finished before), 0 failed, 0 never finished" in stdout
    for name in RUNS:
        assert computed(out / name) == computed(reference / name), name
    # summary, metrics, config and the deployment's bytes: everything but wall times and paths
    assert computed(out / "L19_Q4_N20_s0")["deployment"] is not None


def test_finished_runs_are_skipped_and_nothing_starts(serial_grid):
    reference, base = serial_grid
    before = {name: (reference / name / "summary.json").stat().st_mtime_ns for name in RUNS}
    code, stdout, stderr = cli("sweep", "--config", base, *GRID, "--out", reference)
    assert code == 0, stderr
    assert stdout.splitlines()[0] == (f"plan: 3 cells, 3 runs in {reference}; 3 already finished (skipped), "
                                      "0 to run; nothing to run")
    assert before == {name: (reference / name / "summary.json").stat().st_mtime_ns for name in RUNS}


def grid_configs(folder, weights, names_and_weights):
    configs = []
    for name, path in names_and_weights:
        cfg = resolve_config(str(base_config(folder, weights)), {
            "bits": 4, "replays": 20, "scenario": "nicv2_79", "epochs": 1, "fidelity": False, "weights": str(path),
            "out": str(folder / "grid" / name)})
        configs.append((folder / "grid" / name, cfg))
    return configs


def test_a_failing_run_is_reported_and_the_grid_goes_on(tmp_path, weights_file, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a state dict")  # passes validation, fails when the run loads it
    configs = grid_configs(tmp_path, weights_file, [("bad", bad), ("good", weights_file)])
    report = run_grid(configs, out=tmp_path / "grid", cells=2, settings=GridSettings("local", workers=1))
    stdout = capsys.readouterr().out
    assert [o.status for o in report.outcomes] == ["failed", "finished"]
    assert report.outcomes[0].error.startswith(f"cannot load weights {bad}:") and "\n" not in report.outcomes[0].error
    assert f"[1/2] bad: failed: cannot load weights {bad}:" in stdout
    assert "[2/2] good: final " in stdout
    assert "| bad | failed | 1 | cannot load weights" in stdout  # the closing table of unfinished runs
    assert not (tmp_path / "grid" / "bad").exists() and (tmp_path / "grid" / "good" / "summary.json").is_file()
    with pytest.raises(SystemExit) as exit_info:
        report.exit_if_incomplete()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == ("tinycl: 1 of 2 runs did not finish (1 failed, 0 never finished): the same "
                                       "command retries only them (finished runs are skipped)\n")


def test_a_run_whose_worker_dies_every_try_never_finishes_after_two_retries(tmp_path, weights_file, capsys):
    configs = grid_configs(tmp_path, weights_file, [("doomed", weights_file)])
    with Watcher(victim="spawn_main", kills=3) as watcher:
        report = run_grid(configs, out=tmp_path / "grid", cells=1, settings=GridSettings("local", workers=1))
    stdout = capsys.readouterr().out
    assert len(watcher.killed) == 3
    outcome = report.outcomes[0]
    assert (outcome.status, outcome.tries) == ("lost", 3)
    assert outcome.error == f"worker lost 3 times; last: worker process {watcher.killed[-1]} killed by SIGKILL"
    assert "try 2 of 3" in stdout and "try 3 of 3" in stdout and "[1/1] doomed: never finished" in stdout
    assert "| doomed | never finished | 3 | worker lost 3 times" in stdout
    assert not (tmp_path / "grid" / "doomed").exists()
    with pytest.raises(SystemExit):
        report.exit_if_incomplete()


@pytest.mark.parametrize("extra, message", [
    (["--executor", "dask"], "Invalid value for '--executor': 'dask' is not one of 'serial', 'local', 'ray'."),
    (["--workers", "0"], "Invalid value for '--workers': 0 is not in the range x>=1."),
    (["--executor", "serial", "--workers", "2"],
     "--workers is for --executor local or ray: serial runs one run at a time"),
    (["--ray-address", "127.0.0.1:6379"], "--ray-address is for --executor ray"),
    (["--bits", "9"], "--bits must be 1..8 or 32, got 9"),  # a cell's config fails validation
])
@pytest.mark.parametrize("command", ["sweep", "sparse-sweep"])
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(tmp_path, command, extra, message):
    code, stdout, stderr = cli(command, "--out", tmp_path / "g", *extra)
    assert (code, stdout) == (2, "")
    assert stderr == f"tinycl: error: {message}\n"
    assert not (tmp_path / "g").exists()


def test_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    code, stdout, stderr = cli("sweep", "--executor", "ray", "--out", tmp_path / "g", "--dry-run")
    assert (code, stdout) == (2, "")
    assert stderr == ('tinycl: error: --executor ray needs Ray, an optional extra: pip install -e ".[ray]" '
                      '(or pip install "ray>=2.50,<3")\n')


def test_dry_run_names_the_executor_and_its_workers(tmp_path):
    workers = min(usable_cores(), 144)
    code, stdout, _ = cli("sweep", "--dry-run", "--out", tmp_path / "g")
    assert code == 0
    assert f"144 to run on local: {workers} worker process{'es' * (workers != 1)} × 1 thread;" in stdout
    code, stdout, _ = cli("sweep", "--dry-run", "--out", tmp_path / "g", "--workers", 3, "--threads", 2)
    assert "144 to run on local: 3 worker processes × 2 threads;" in stdout


def test_the_estimate_spreads_the_runs_over_the_workers(tmp_path):
    dirs = [tmp_path / f"run{i}" for i in range(5)]
    dirs[0].mkdir()
    (dirs[0] / "summary.json").write_text('{"wall_seconds": 100.0}')
    text = plan_text(5, dirs, tmp_path, skip_finished=True, executor="local: 2 worker processes × 1 thread",
                     parallel=2)
    # 4 runs of ~100 s, 2 at a time: ~200 s
    assert text == (f"plan: 5 cells, 5 runs in {tmp_path}; 1 already finished (skipped), 4 to run on local: 2 worker "
                    "processes × 1 thread; estimated time: ~3 min 20 s (1 min 40 s per run, the mean wall time of 1 "
                    "finished run here, 2 at a time)")


def test_the_socket_watcher_reads_addresses_exactly():
    """Control of the Ray test's loopback check: a socket listening on 127.0.0.2 and one on ::1,
    opened by this process, are seen with their addresses; only loopback passes."""
    import socket

    from gridtools import is_loopback

    with socket.socket() as four, socket.socket(socket.AF_INET6) as six:
        four.bind(("127.0.0.2", 0))
        four.listen()
        six.bind(("::1", 0))
        six.listen()
        watcher = Watcher(sockets=True)
        watcher.look()
        mine = {(s[2], s[3], s[4]) for s in watcher.sockets if s[0] == os.getpid()}
        assert ("tcp", "LISTEN", ("127.0.0.2", four.getsockname()[1])) in mine
        assert ("tcp6", "LISTEN", ("::1", six.getsockname()[1])) in mine
    assert [is_loopback(a) for a in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1")] == [True] * 4
    assert [is_loopback(a) for a in ("0.0.0.0", "::", "192.0.2.2", "::ffff:192.0.2.2", "10.0.0.1")] == [False] * 5
