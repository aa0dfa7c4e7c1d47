"""``tinycl cost`` and ``tinycl report``: JSON contract, one-line errors, PNGs."""

import json

import pytest

from tinycl.cli import main

PAPER = [
    "cost",
    "--model",
    "mobilenet_v1",
    "--res",
    "128",
    "--lr-layer",
    "19",
    "--replays",
    "1500",
    "--bits",
    "8",
]


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_json_carries_stages_totals_and_targets(capsys):
    code, out, _ = run([*PAPER, "--target", "vega,stm32l4", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["totals"]["forward_macs"] == 185_444_352
    assert data["totals"]["memory_bytes"] == 89_096_584
    assert data["lr"] == {"values": 32_768, "bytes": 32_768, "replay_bytes": 49_152_000}
    assert (
        data["stages"]["frozen"]["forward_macs"] + data["stages"]["adaptive"]["forward_macs"]
        == 185_444_352
    )
    assert data["stages"]["frozen"]["weight_bytes"] == 1_069_504
    assert data["memory"]["replay_bytes"] == 49_152_000
    for key in ("vega", "stm32l4"):
        target = data["targets"][key]
        assert target["latency_s"]["per_minibatch"] > 0
        assert target["energy_j"]["per_cl_batch"] > target["energy_j"]["per_minibatch"] > 0
        assert "lifetime = E_batt" in target["battery"]["formula"]
    assert data["comparisons"][0]["fast"] == "vega"
    assert len(data["findings"]) == 2


def test_table_output_prints_totals_ratios_and_finding(capsys):
    code, out, _ = run([*PAPER, "--target", "vega", "--target", "stm32l4", "--no-layers"], capsys)
    assert code == 0
    assert "forward MACs: 185,444,352 (185.4 M)" in out
    assert "1500 LRs = 49,152,000 bytes" in out
    assert "vega vs stm32l4:" in out and "(paper, VEGA vs STM32L4: 65x, 37x)" in out
    assert "lifetime = E_batt / (E_mb + P_sleep*(T - t_mb)) * T" in out
    assert "finding: stm32l4: the configuration needs 89,096,584 bytes and fits no memory" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*PAPER, "--target", "nope"], "tinycl: error: unknown target 'nope'; known targets: "),
        (["cost", "--lr-layer", "40"], "tinycl: error: LR layer 40 out of range for MobileNetV1"),
        (["cost", "--bits", "12"], "tinycl: error: --bits must be 1..8 or 32"),
        (["cost", "--model", "resnet"], "tinycl: error: unknown model 'resnet'"),
    ],
)
def test_user_errors_are_one_line(argv, message, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1


def write_run(path, **over):
    path.mkdir(parents=True)
    summary = {
        "model": "mobilenet_v1",
        "width": 1.0,
        "res": 128,
        "lr_layer": 19,
        "replays": 1500,
        "lr_bits": 8,
        "final_accuracy": 0.7,
        "average_accuracy": 0.6,
        "lr_memory_bytes": 49_152_000,
        "num_batches": 391,
        **over,
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "metrics.jsonl").write_text("")


def test_report_single_run(tmp_path, capsys):
    write_run(tmp_path / "run")
    code, out, _ = run(["report", str(tmp_path / "run"), "--target", "gap9"], capsys)
    assert code == 0
    assert (tmp_path / "run" / "latency_per_layer.png").stat().st_size > 0
    assert (tmp_path / "run" / "memory.png").stat().st_size > 0
    assert "finding: gap9:" in out


def test_report_sweep_writes_pareto(tmp_path, capsys):
    write_run(tmp_path / "sweep" / "a", replays=500, lr_bits=7, final_accuracy=0.6)
    write_run(tmp_path / "sweep" / "b", replays=1500, lr_bits=8, final_accuracy=0.7)
    write_run(tmp_path / "sweep" / "c", replays=1500, lr_bits=32, final_accuracy=0.69)
    code, out, _ = run(["report", str(tmp_path / "sweep")], capsys)
    assert code == 0
    assert (tmp_path / "sweep" / "pareto.png").stat().st_size > 0
    assert (tmp_path / "sweep" / "memory.png").stat().st_size > 0
    assert "pareto.png" in out


def test_report_errors(tmp_path, capsys):
    code, _, err = run(["report", str(tmp_path / "missing")], capsys)
    assert code == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(["report", str(tmp_path / "empty")], capsys)
    assert code == 2 and "holds no summary.json" in err


def test_pareto_front():
    from tinycl.report.device_plots import ParetoPoint, pareto_front

    pts = [ParetoPoint("a", 10, 0.5), ParetoPoint("b", 20, 0.4), ParetoPoint("c", 30, 0.7)]
    assert [p.label for p in pareto_front(pts)] == ["a", "c"]
