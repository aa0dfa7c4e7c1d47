"""``tinycl cost`` and ``tinycl report``: JSON contract, basis, printed equations, errors, PNGs."""

import json
import re

import pytest
from printed_equations import check_equation, equations, half_ulp

from tinycl.cli import main

# The QLR-CL paper's configuration (MobileNetV1 1.0 at 128 px), not tinycl run's defaults.
PAPER = [
    "cost",
    "--model",
    "mobilenet_v1",
    "--width",
    "1.0",
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
    # batch renorm holds the mini-batch's 128 samples of activations (test_memory.py)
    assert data["totals"]["memory_bytes"] == 291_841_416
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
    assert data["paper"]["speedup"] == 65 and data["paper"]["lifetime_h"] == 535
    assert len(data["findings"]) == 2


def test_json_carries_the_basis_per_target_pass_and_primitive(capsys):
    code, out, _ = run([*PAPER, "--target", "vega,stm32l4", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    vega = data["targets"]["vega"]["basis"]
    assert vega["freq_hz"]["value"] == 450e6 and vega["freq_hz"]["assumption"] is True
    assert vega["active_power_w"]["kind"] == "peak"
    assert "9 cluster cores" in vega["note"]
    pw = vega["rates"]["fp32_forward"]["pw"]
    assert pw["kind"] == "peak" and pw["listed_mac_per_cycle"] == 2.21
    assert pw["utilization"] == 0.79 and "assumption" in pw["utilization_source"]
    assert pw["effective_mac_per_cycle"] == 2.21 * 0.79
    for target in data["targets"].values():
        for pass_name, prims in target["basis"]["rates"].items():
            assert set(prims) == {"conv", "dw", "pw", "linear", "pool"}, pass_name
            for rate in prims.values():
                assert rate["kind"] in ("peak", "sustained", "derived")
                assert rate["effective_mac_per_cycle"] == (
                    rate["listed_mac_per_cycle"] * rate["utilization"]
                )
        passes = target["basis"]["passes"]
        assert set(passes) == {
            "int8_forward",
            "fp32_forward",
            "fp32_input_grad",
            "fp32_weight_grad",
        }
        fwd = passes["fp32_forward"]
        assert fwd["macs_per_sample"] == 59_303_936
        assert fwd["effective_mac_per_cycle"] == pytest.approx(
            fwd["macs_per_sample"] / fwd["cycles_per_sample"]
        )
        # MAC-weighted: effective = listed x utilization over the pass
        assert fwd["effective_mac_per_cycle"] == pytest.approx(
            fwd["listed_mac_per_cycle"] * fwd["utilization"]
        )
    stm = data["targets"]["stm32l4"]["battery"]
    assert stm["keeps_up"] is False and stm["period_used_s"] == stm["minibatch_s"] > 60
    assert f"* {stm['period_used_s']:.6g} s / 3600 s/h" in stm["formula"]
    cmp = data["comparisons"][0]
    assert cmp["paper"] == {"speedup": 65, "energy_ratio": 37}
    assert cmp["speedup"] == pytest.approx(cmp["slow_minibatch_s"] / cmp["fast_minibatch_s"])


def test_table_output_prints_totals_ratios_basis_and_finding(capsys):
    code, out, _ = run([*PAPER, "--target", "vega", "--target", "stm32l4", "--no-layers"], capsys)
    assert code == 0
    assert "= 126,140,416 + 59,303,936 = 185,444,352 MACs (185.4 M)" in out
    assert "1500 LRs * 32,768 bytes = 49,152,000 bytes" in out
    assert "vega vs stm32l4: speed-up = t_mb(stm32l4) / t_mb(vega) = " in out
    assert "(paper: 65x on average)" in out and "(paper: 37x)" in out
    assert "lifetime = E_batt / (E_mb + P_sleep * (T - t_mb)) * T" in out
    assert "paper: 535 h at one mini-batch a minute" in out
    assert "finding: stm32l4: the configuration needs 291,841,416 bytes and fits no memory" in out
    assert "finding: stm32l4 cannot keep up with one mini-batch every 60 s" in out
    # the basis sits next to the comparison: peaks, utilizations, clock assumption
    tail = out[out.index("comparison with the QLR-CL paper") :]
    assert "basis [vega]: MAC/cycle INT8 fwd 15.5 peak at " in tail
    assert "FP32 fwd 2.21 peak at " in tail and "FP32 w-grad 1.7 peak at " in tail
    assert "clock 450 MHz (derived, assumption)" in tail
    assert "active power 49.4 mW (peak, cited)" in tail
    assert "basis [stm32l4]: MAC/cycle INT8 fwd 0.52 derived at " in tail
    assert "[vega]   FP32 forward (adaptive stage, per latent): dw 2.21 peak x 0.32 -> 0.7072" in out
    assert "not scaled to VEGA's 9 cluster cores" in out


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


# --- every equation tinycl cost prints evaluates to its printed result ------------------------

ALL_TARGETS = "vega,stm32l4,gap9,cortex_m7"
CONFIGS = [
    # the paper's configuration on every target: the STM32L4 cannot keep up with 1 minute
    [*PAPER, "--target", ALL_TARGETS],
    # a 30 s period: VEGA cannot keep up either
    [*PAPER, "--target", "vega,stm32l4", "--period-min", "0.5"],
    # a one-hour period: every target keeps up; 7-bit LRs at layer 23 (ceil in the LR bytes)
    ["cost", "--width", "1.0", "--res", "128", "--lr-layer", "23", "--replays", "500", "--bits", "7",
     "--period-min", "60", "--target", "vega,stm32l4"],
    # FP32 LRs, half width at 64 px, fewer images than a mini-batch (the min(n, B) branch)
    ["cost", "--width", "0.5", "--res", "64", "--bits", "32", "--new-images", "50",
     "--replays", "20", "--target", "gap9,cortex_m7"],
    ["cost", "--width", "1.0", "--res", "128", "--replays", "1500", "--no-momentum", "--epochs", "2",
     "--minibatch", "64", "--period-min", "0.01", "--battery-mah", "250", "--battery-v", "3.0",
     "--target", "cortex_m7,vega"],
    # tinycl run's defaults: width 0.25, 64 px, mobilenet_v1's LR layer 19, 750 8-bit LRs
    ["cost", "--target", "vega,stm32l4"],
]
BASIS_RATE = re.compile(r"(\w+) ([\d.]+) (peak|sustained|derived) x ([\d.]+) -> ([\d.e+-]+)")
RECAP = re.compile(
    r"(INT8 fwd|FP32 fwd|FP32 in-grad|FP32 w-grad) ([\d.]+) ([a-z/]+) at (\d+)% -> ([\d.e+-]+)"
)
RECAP_PASS = {
    "INT8 fwd": "int8_forward",
    "FP32 fwd": "fp32_forward",
    "FP32 in-grad": "fp32_input_grad",
    "FP32 w-grad": "fp32_weight_grad",
}


def targets_of(argv):
    return argv[argv.index("--target") + 1].split(",")


@pytest.mark.parametrize("argv", CONFIGS, ids=lambda a: " ".join(a[1:]))
def test_every_printed_equation_evaluates_to_its_printed_result(argv, capsys):
    code, out, _ = run([*argv, "--no-layers"], capsys)
    assert code == 0
    found = equations(out)
    n = len(targets_of(argv))
    # 7 report-level (MACs, LR bytes, workload), 8 per target (3 latencies, 3 energies,
    # period, lifetime), 2 per comparison (speed-up, energy ratio)
    assert len(found) == 7 + 8 * n + 2 * (n - 1), found
    for clause in found:
        check_equation(clause)
    code, js, _ = run([*argv, "--json"], capsys)
    data = json.loads(js)
    for key in targets_of(argv):
        battery = data["targets"][key]["battery"]
        (period_line,) = [c for c in found if c.startswith(f"[{key}] T = max(")]
        (life_line,) = [c for c in found if c.startswith(f"[{key}] lifetime = ")]
        period, _ = check_equation(period_line)
        life, printed = check_equation(life_line)
        # the formula prints the period it used, and the text matches the JSON
        assert f"* {period:.6g} s / 3600 s/h" in life_line
        assert period == pytest.approx(battery["period_used_s"], rel=1e-5)
        assert float(printed) == pytest.approx(battery["lifetime_h"], abs=0.05 + 1e-4 * life)
        assert (f"[{key}] battery: cannot keep up" in out) == (not battery["keeps_up"])
        if not battery["keeps_up"]:
            assert period == pytest.approx(battery["minibatch_s"], rel=1e-5)
            assert period > battery["period_s"]
    for cmp in data["comparisons"]:
        (speed,) = [c for c in found if c.startswith(f"{cmp['fast']} vs {cmp['slow']}: speed-up")]
        value, _ = check_equation(speed)
        assert value == pytest.approx(cmp["speedup"], rel=1e-5)


@pytest.mark.parametrize("argv", CONFIGS[:2], ids=["all targets", "30 s period"])
def test_printed_basis_rates_are_listed_times_utilization(argv, capsys):
    code, out, _ = run([*argv, "--no-layers"], capsys)
    code, js, _ = run([*argv, "--json"], capsys)
    data = json.loads(js)
    checked = 0
    for line in out.splitlines():
        key_match = re.match(r"\[(\w+)\]   (INT8|FP32) ", line)
        if key_match:
            key = key_match[1]
            for prim, listed, kind, use, effective in BASIS_RATE.findall(line):
                product = float(listed) * float(use)
                assert abs(product - float(effective)) <= half_ulp(effective) * 1.000001, line
                passes = data["targets"][key]["basis"]["rates"]
                assert any(
                    p[prim]["listed_mac_per_cycle"] == float(listed)
                    and p[prim]["utilization"] == float(use)
                    and p[prim]["kind"] == kind
                    for p in passes.values()
                )
                checked += 1
        recap = re.match(r"basis \[(\w+)\]: ", line)
        if recap:
            passes = data["targets"][recap[1]]["basis"]["passes"]
            for label, listed, _, percent, effective in RECAP.findall(line):
                truth = passes[RECAP_PASS[label]]
                assert float(listed) == pytest.approx(truth["listed_mac_per_cycle"], rel=5e-3)
                assert int(percent) == round(100 * truth["utilization"])
                assert float(effective) == pytest.approx(truth["effective_mac_per_cycle"], rel=5e-3)
                # printed listed x printed utilization = printed effective, within the rounding
                bound = float(listed) * 0.005 + half_ulp(listed) + half_ulp(effective)
                assert abs(float(listed) * int(percent) / 100 - float(effective)) <= bound * 1.01
                checked += 1
    assert checked >= 10 * len(targets_of(argv))


def test_configs_cover_keeping_up_and_not(capsys):
    keeps_up = {}
    for argv in CONFIGS[:3]:
        code, js, _ = run([*argv, "--json"], capsys)
        for key, target in json.loads(js)["targets"].items():
            keeps_up.setdefault(key, set()).add(target["battery"]["keeps_up"])
    assert keeps_up["vega"] == {True, False} and keeps_up["stm32l4"] == {True, False}


# --- defaults agree with tinycl run; cost --from RUN_DIR prices what a run did ----------------


def test_defaults_are_tinycl_runs(capsys):
    from tinycl.config import RunConfig
    from tinycl.models.registry import default_lr_layer

    code, out, _ = run(["cost", "--json"], capsys)
    assert code == 0
    config, defaults = json.loads(out)["config"], RunConfig()
    assert config["model"] == defaults.model.name and config["width"] == defaults.model.width
    assert config["res"] == defaults.model.res and config["lr_layer"] == default_lr_layer(defaults.model.name)
    assert config["replays"] == defaults.replay.replays and config["bits"] == defaults.replay.bits
    assert config["epochs"] == defaults.train.epochs and config["minibatch_size"] == defaults.train.minibatch


def write_finished_run(path, *, batch0=20, train_images=800, num_batches=79, strategy="latent-replay",
                       sparse="", **summary_over):
    """A run folder as tinycl run leaves it (config.toml, metrics.jsonl, summary.json last)."""
    from tinycl.config import RunConfig, dump_toml

    cfg = RunConfig()
    cfg.model.width, cfg.model.res, cfg.model.lr_layer = 0.5, 96, 21
    cfg.replay.replays, cfg.replay.bits = 300, 6
    cfg.train.epochs, cfg.train.minibatch, cfg.train.momentum = 2, 64, 0.0
    cfg.train.strategy, cfg.train.sparse = strategy, sparse
    path.mkdir(parents=True)
    (path / "config.toml").write_text(dump_toml(cfg))
    records = [{"batch": b, "accuracy": 0.1, "new_samples": batch0 if b == 0 else 10} for b in range(num_batches)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"model": "mobilenet_v1", "width": 0.5, "res": 96, "lr_layer": 21, "replays": 300, "lr_bits": 6,
               "num_classes": 10, "num_batches": num_batches, "train_images": train_images, "strategy": strategy,
               "final_accuracy": 0.1, "average_accuracy": 0.1, **summary_over}
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_cost_from_a_run_prices_exactly_its_configuration(tmp_path, capsys):
    run_dir = write_finished_run(tmp_path / "r")
    code, out, err = run(["cost", "--from", str(run_dir), "--json", "--target", "vega,stm32l4"], capsys)
    assert code == 0, err
    priced = json.loads(out)
    # (800 - 20) / 78 incremental batches = 10 new images per CL batch
    assert priced["from_run"]["new_images"] == 10
    same = ["cost", "--width", "0.5", "--res", "96", "--lr-layer", "21", "--replays", "300", "--bits", "6",
            "--new-images", "10", "--epochs", "2", "--minibatch", "64", "--no-momentum", "--num-classes", "10",
            "--json", "--target", "vega,stm32l4"]
    code, out, _ = run(same, capsys)
    explicit = json.loads(out)
    assert priced.pop("from_run")["run_dir"] == str(run_dir)
    assert priced == explicit
    code, out, _ = run(["cost", "--from", str(run_dir), "--no-layers"], capsys)
    first = out.splitlines()[0]
    assert first.startswith(f"priced from {run_dir}: mobilenet_v1 width 0.5 at 96 px, LR layer 21, 300 x 6-bit LRs")
    assert "new images per CL batch: (train_images 800 - batch 0's 20) / 78 incremental batches = 10" in first


def test_cost_from_a_real_run(tmp_path, monkeypatch, capsys):
    """The contract with tinycl run: its summary, config and metrics hold what --from reads."""
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path / "cache"))
    out_dir = tmp_path / "run"
    code, _, err = run(["run", "--frames", "2", "--epochs", "1", "--replays", "40", "--bits", "4", "--scenario", "ci",
                        "--labels", "category", "--no-fidelity", "--out", str(out_dir), "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    code, out, err = run(["cost", "--from", str(out_dir), "--json"], capsys)
    assert code == 0, err
    priced = json.loads(out)
    config = priced["config"]
    assert (config["width"], config["res"], config["lr_layer"], config["replays"], config["bits"]) == (
        0.25, 64, 19, 40, 4)
    assert config["epochs"] == 1 and config["num_classes"] == summary["num_classes"] == 10
    first = json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[0])["new_samples"]
    expected = round((summary["train_images"] - first) / (summary["num_batches"] - 1))
    assert config["new_images"] == expected == priced["from_run"]["new_images"]
    assert priced["memory"]["replay_bytes"] == summary["lr_memory_bytes"]  # the run's own LR bytes
    code, out, err = run(["report", str(out_dir)], capsys)
    assert code == 0 and (out_dir / "memory.png").stat().st_size > 0


@pytest.mark.parametrize(("setup", "extra", "message"), [
    (lambda p: p, [], "no such run directory"),
    (lambda p: p.mkdir(), [], "is not a finished run: no summary.json (tinycl run writes it last)"),
    (lambda p: (write_finished_run(p), (p / "config.toml").unlink()), [], "is not a finished run: no config.toml"),
    (lambda p: (write_finished_run(p), (p / "metrics.jsonl").unlink()), [], "is not a finished run: no metrics.jsonl"),
    (write_finished_run, ["--width", "1"], "--from prices the run as it was: drop --width"),
    (write_finished_run, ["--lr-layer", "19"], "--from prices the run as it was: drop --lr-layer"),
    (lambda p: write_finished_run(p, strategy="joint"), [], "the cost model prices latent replay on the device; "
                                                            "this run's strategy is joint"),
    (lambda p: write_finished_run(p, lr_bits="eight"), [], "summary.json lacks a valid"),
])
def test_cost_from_refuses_what_is_not_a_finished_run_in_one_line(tmp_path, capsys, setup, extra, message):
    path = tmp_path / "r"
    setup(path)
    code, out, err = run(["cost", "--from", str(path), *extra], capsys)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_cost_from_notes_a_sparse_run(tmp_path, capsys):
    run_dir = write_finished_run(tmp_path / "r", sparse="22=0.25")
    code, out, _ = run(["cost", "--from", str(run_dir), "--no-layers"], capsys)
    assert code == 0
    assert "note: the cost model prices dense backprop, the run used --sparse 22=0.25" in out.splitlines()[0]
