import re

import pytest
import torch
from conftest import cli

from tinycl.device.costs import layer_costs
from tinycl.device.memory import kept_activation_bytes
from tinycl.models import create_model


def sweep_args(weights, out, *extra):
    return ["sparse-sweep", "--res", 32, "--frames", 2, "--scenario", "ci", "--labels", "category",
            "--epochs", 1, "--replays", 60, "--weights", weights, "--seeds", 0, "--out", out, *extra]


def table_rows(text):
    """{setting: [cells]} of the markdown table's body."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| mobilenet_v1 int8 "):
            rows[cells[1]] = cells
    return rows


def number(cell):
    return float(cell.split()[0].replace(",", ""))


@pytest.fixture(autouse=True)
def restore_threads():
    """`tinycl sparse-sweep --threads` sets torch's thread count in this process; put it back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_sweep_writes_the_table_with_cost_model_and_measured_ratios(weights_file, tmp_path):
    out = tmp_path / "sweep"
    code, stdout, stderr = cli(*sweep_args(weights_file, out, "--ratios", "1,0.25"))
    assert code == 0, stderr
    assert stdout.startswith(f"plan: 2 cells (mobilenet_v1 at LR layer 19), 2 runs in {out}; 0 already finished "
                             "(skipped), 2 to run on local: ")
    assert "; estimated time: no estimate yet" in stdout.splitlines()[0]
    # runs end in any order on the local pool; [i/n] is the run's place in the grid
    assert sorted(re.findall(r"\[(\d)/2\] (\S+):", stdout)) == [("1", "mobilenet_v1_dense_s0"),
                                                                ("2", "mobilenet_v1_allx0.25_s0")]
    text = (out / "sparse_tradeoff.md").read_text()
    rows = table_rows(text)
    assert list(rows) == ["dense", "all×0.25"]
    dense, sparse = rows["dense"], rows["all×0.25"]
    # Cost model, dense: exactly tinycl.device's figures for MobileNetV1 w0.25 @32 px above layer 19.
    costs = [r for r in layer_costs(create_model("mobilenet_v1", num_classes=10, width=0.25), 32, 19)
             if r.stage == "adaptive"]
    dense_macs = sum(r.backward_macs for r in costs)
    dense_kept = sum(kept_activation_bytes(r) for r in costs)
    assert number(dense[4]) == dense_macs and number(dense[6]) == dense_kept
    # Ratio 0.25 on layers 20..26: a quarter of their weight-gradient MACs and of their FP32 inputs.
    convs = [r for r in costs if r.index <= 26]
    assert number(sparse[4]) == dense_macs - 0.75 * sum(r.weight_grad_macs for r in convs)
    assert number(sparse[6]) == dense_kept - 0.75 * 4 * sum(r.in_values for r in convs)
    assert number(sparse[5]) == pytest.approx(dense_macs / number(sparse[4]), abs=0.005)
    assert number(sparse[7]) == pytest.approx(dense_kept / number(sparse[6]), abs=0.005)
    assert number(dense[5]) == number(dense[7]) == number(dense[9]) == 1.0
    # Measured saved-tensor bytes of one 128-sample step: smaller when sparse, by less than the
    # cost model says (batch renorm's eager ops keep several full tensors per norm).
    assert number(sparse[8]) < 0.9 * number(dense[8])
    assert number(sparse[9]) == pytest.approx(number(dense[8]) / number(sparse[8]), abs=0.005)
    assert number(dense[10]) > 0 and number(sparse[10]) > 0 and dense[12] == sparse[12] == "1"
    assert "mobilenet_v1 int8: " in text and (out / "sparse_tradeoff.png").stat().st_size > 10_000
    # Resume: finished runs are skipped, the table is rebuilt from them; the plan says so first.
    code, stdout, _ = cli(*sweep_args(weights_file, out, "--ratios", "1,0.25"))
    assert code == 0 and "[1/2]" not in stdout and table_rows(stdout) == rows
    assert stdout.splitlines()[0] == (f"plan: 2 cells (mobilenet_v1 at LR layer 19), 2 runs in {out}; 2 already "
                                      "finished (skipped), 0 to run; nothing to run")


@pytest.mark.parametrize("extra, message", [
    (["--ratios", "1,0"], "--ratios entries must be channel ratios in (0, 1], got '0'"),
    (["--ratios", "1.5"], "--ratios entries must be channel ratios in (0, 1], got '1.5'"),
    (["--spec", "20=2"], "--sparse entry '20=2' must be LAYER=RATIO with RATIO in (0, 1]"),
    (["--spec", "99=0.5"], "unknown layer '99'; adaptive stage has layers 20..28"),
    (["--lr-layers", "40"], "LR layer 40 out of range for MobileNetV1: choose 0..27"),
    (["--lr-layers", "27"], "no conv layer above LR layer 27"),
])
def test_bad_input_is_one_line_and_exit_2(weights_file, tmp_path, extra, message):
    code, stdout, stderr = cli(*sweep_args(weights_file, tmp_path / "bad", *extra))
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr
    assert not (tmp_path / "bad").exists()  # nothing ran


def test_verdict_takes_the_largest_saving_within_two_points():
    from tinycl.report.sparse_table import BackwardCost, SparseRow, verdict

    def row(setting, acc, macs, kept, measured):
        return SparseRow("m", setting, BackwardCost(macs, 0, kept), measured, (acc, acc), (0.1, 0.1))

    rows = [row("dense", 0.50, 300, 300, 600), row("a", 0.49, 200, 210, 500), row("b", 0.475, 100, 150, 400)]
    assert verdict(rows) == [
        "m: best within 2 points is a (-1.00 points): 1.50x less backward compute, 1.43x less backward "
        "memory (cost model; measured 1.20x) -> paper's 1.3x met, goal 2x not met"]
    rows[1] = row("a", 0.47, 200, 210, 500)
    assert verdict(rows)[0].startswith("m: no sparse setting within 2 points of dense (closest: b, -2.50 points")


def test_dry_run_plans_every_model_at_its_registry_lr_layer(tmp_path):
    out = tmp_path / "plan"
    code, stdout, stderr = cli("sparse-sweep", "--models", "mobilenet_v1,phinet", "--ratios", "1,0.5", "--seeds",
                               "0,1", "--out", out, "--dry-run", "--executor", "serial")
    assert code == 0, stderr
    assert stdout == (f"plan: 4 cells (mobilenet_v1 at LR layer 19, phinet at LR layer 5), 8 runs in {out}; "
                      "0 already finished (skipped), 8 to run on serial: one run at a time in this process × 1 thread; "
                      "estimated time: no estimate yet (no finished run in this folder)\n")
    assert not out.exists()


def test_bias_only_mix_float_and_fold_cells_are_planned_and_labelled(tmp_path):
    """--bias-only, --mix, --frozen and --norms add cells, each with its own folder and label:
    4 + 2 settings on two frozen stages, then the fold cells; float cells keep FP32 latents."""
    from tinycl.cli.sparse_sweep import Setting

    out = tmp_path / "plan"
    code, stdout, stderr = cli("sparse-sweep", "--models", "mobilenet_v1", "--ratios", "1,0.5", "--bias-only",
                               "--mix", "0.25", "--frozen", "auto,float", "--seeds", "0", "--out", out,
                               "--dry-run", "--executor", "serial")
    assert code == 0, stderr
    assert stdout.startswith(f"plan: 8 cells (mobilenet_v1 at LR layer 19), 8 runs in {out}")
    above = ["20", "21", "22", "23", "24", "25", "26"]
    base = dict(model="mobilenet_v1", width=0.25, res=64, lr_layer=19, policy="random", minibatch=128)
    bias = Setting(sparse=",".join(f"{k}=bias" for k in above), norm="brn", **base)
    assert bias.label() == "bias-only" and bias.group() == "mobilenet_v1 int8" and bias.group("float") == \
        "mobilenet_v1 float"
    mix = Setting(sparse="20=0.25,21=0.25,22=0.25", norm="fold", frozen="float", **base)
    assert mix.label() == "20=0.25,21=0.25,22=0.25 norm=fold" and mix.group() == "mobilenet_v1 float"
    assert Setting(sparse="", norm="fold", **base).label() == "dense norm=fold"
    code, _, stderr = cli("sparse-sweep", "--frozen", "int4", "--out", out, "--dry-run")
    assert code == 2 and "--frozen must list auto, int8 or float" in stderr
