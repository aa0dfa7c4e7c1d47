import json

from conftest import cli

from tinycl.cli.run import resolve_config
from tinycl.cli.sweep import run_name
from tinycl.grid.executors import usable_cores
from tinycl.grid.plan import duration_text, plan_text
from tinycl.report.sweep import cells, markdown_table, pooled_table, read_summaries


def summary(bits, acc, seed, *, arithmetic="int8", replays=750, memory=None, **extra):
    return {"lr_layer": 19, "lr_bits": bits, "replays": replays, "seed": seed, "final_accuracy": acc,
            "frozen_arithmetic": arithmetic, "lr_memory_bytes": memory or replays * 256 * bits, **extra}


def test_cells_keep_quantizers_apart_and_label_them():
    table = cells([
        summary(32, 0.30, 0, arithmetic="float"), summary(32, 0.32, 1, arithmetic="float"),
        summary(4, 0.27, 0), summary(4, 0.27, 1),
        summary(4, 0.28, 0, quantizer="clip"), summary(4, 0.28, 1, quantizer="clip"),
        summary(4, 0.29, 0, quantizer="clip per-channel"),
    ])
    assert [c.label for c in table] == ["32", "4", "4 (clip)", "4 (clip per-channel)"]
    assert [len(c.accuracies) for c in table] == [2, 2, 2, 1]


def test_table_deltas_vs_fp32_and_vs_int8_stage():
    runs = [summary(32, 0.30, 0, arithmetic="float"), summary(8, 0.27, 0), summary(4, 0.26, 0),
            summary(4, 0.28, 0, quantizer="clip")]
    text = markdown_table(cells(runs))
    # no INT8 control: the 8-bit shift cell (identity on UINT8 codes) is the INT8-stage reference
    assert "| 19 | 32 | 750 | 6,144,000 | 30.00 ± n/a | — | — | 1 |" in text
    assert "| 19 | 8 | 750 | 1,536,000 | 27.00 ± n/a | -3.00 | — | 1 |" in text
    assert "| 19 | 4 | 750 | 768,000 | 26.00 ± n/a | -4.00 | -1.00 | 1 |" in text
    assert "| 19 | 4 (clip) | 750 | 768,000 | 28.00 ± n/a | -2.00 | +1.00 | 1 |" in text
    # the control's seed wins over the 8-bit shift's (they are equal in real runs)
    text = markdown_table(cells([*runs, summary(32, 0.25, 0)]))
    assert "| 19 | 32 (INT8 stage) | 750 | 6,144,000 | 25.00 ± n/a | -5.00 | — | 1 |" in text
    assert "| 19 | 4 | 750 | 768,000 | 26.00 ± n/a | -4.00 | +1.00 | 1 |" in text


def test_deltas_are_paired_over_common_seeds():
    runs = [summary(32, 0.30, 0, arithmetic="float"), summary(32, 0.40, 1, arithmetic="float"),
            summary(8, 0.29, 0), summary(8, 0.37, 1), summary(8, 0.31, 2),
            summary(4, 0.28, 0), summary(4, 0.36, 1)]
    text = markdown_table(cells(runs))
    # 8-bit: seeds 0 and 1 only have an FP32 partner: (-1 - 3) / 2 = -2.00 over 2 of 3 seeds
    assert "| 19 | 8 | 750 | 1,536,000 | 32.33 ± 3.40 | -2.00 (2) | — | 3 |" in text
    assert "| 19 | 4 | 750 | 768,000 | 32.00 ± 4.00 | -3.00 | -1.00 | 2 |" in text


def test_observer_cells_have_their_own_int8_stage_reference():
    runs = [summary(32, 0.30, 0, arithmetic="float"), summary(8, 0.27, 0), summary(4, 0.26, 0),
            summary(8, 0.25, 0, observer="mse"), summary(4, 0.245, 0, observer="mse"),
            summary(4, 0.20, 0, quantizer="clip", observer="percentile")]
    table = cells(runs)
    assert [c.label for c in table] == ["32", "8", "8 (mse observer)", "4", "4 (mse observer)",
                                        "4 (clip, percentile observer)"]
    text = markdown_table(table)
    # the MSE 8-bit cell is the MSE INT8-stage reference: no INT8-stage delta of its own
    assert "| 19 | 8 (mse observer) | 750 | 1,536,000 | 25.00 ± n/a | -5.00 | — | 1 |" in text
    # 4-bit MSE against 8-bit MSE (-0.50), not against the min-max 8-bit (-2.50)
    assert "| 19 | 4 (mse observer) | 750 | 768,000 | 24.50 ± n/a | -5.50 | -0.50 | 1 |" in text
    # no percentile INT8 stage in the sweep: no INT8-stage delta rather than a wrong one
    assert "| 19 | 4 (clip, percentile observer) | 750 | 768,000 | 20.00 ± n/a | -10.00 | — | 1 |" in text


def test_pooled_table_pools_paired_differences_over_n_and_layers():
    def at(layer, bits, acc, seed, replays, **kw):
        return {**summary(bits, acc, seed, replays=replays, **kw), "lr_layer": layer}

    runs = []
    for layer, gap in ((19, 0.01), (23, 0.03)):
        for replays in (375, 750):
            for seed in (0, 1):
                fp32 = 0.30 + 0.01 * seed
                # 8-bit: the INT8 stage costs `gap` (+1 point more at N = 750); 4-bit 0.5 below 8-bit
                eight = fp32 - gap - (0.01 if replays == 750 else 0)
                runs += [at(layer, 32, fp32, seed, replays, arithmetic="float"),
                         at(layer, 8, eight, seed, replays), at(layer, 4, eight - 0.005, seed, replays)]
    runs.append(at(19, 4, 0.10, 0, 3000))  # no FP32 partner at N = 3000: pools nothing
    text = pooled_table(cells(runs))
    lines = text.splitlines()
    assert lines[0] == ("| Q bits | minus | layer 19: mean (sd, pairs) | layer 23: mean (sd, pairs) "
                        "| all: mean ± s.e. (pairs) | range |")
    # 8 - FP32, layer 19: -1, -1, -2, -2 -> mean -1.50, sd sqrt(1/3) = 0.58; layer 23: -3, -3, -4, -4;
    # all 8 pairs: mean -2.50, sd 1.195 -> s.e. 0.42
    assert "| 8 | FP32 | -1.50 (0.58, 4) | -3.50 (0.58, 4) | -2.50 ± 0.42 (8) | -4.00 … -1.00 |" in lines
    assert "| 4 | FP32 | -2.00 (0.58, 4) | -4.00 (0.58, 4) | -3.00 ± 0.42 (8) | -4.50 … -1.50 |" in lines
    # against the INT8 stage (the 8-bit shift), every pair is -0.50: sd 0
    assert "| 4 | INT8-stage FP32 | -0.50 (0.00, 4) | -0.50 (0.00, 4) | -0.50 ± 0.00 (8) | -0.50 … -0.50 |" in lines
    assert len(lines) == 5  # header, rule, three rows: nothing for the baseline or 8 vs itself


def test_read_summaries_takes_the_observer_from_the_summary_or_config(tmp_path):
    for name, bits, arithmetic, stated, quant in [("a", 8, "int8", None, 'observer = "mse"'),
                                                  ("b", 8, "int8", "percentile", 'observer = "mse"'),
                                                  ("c", 32, "float", None, 'observer = "mse"'),
                                                  ("d", 8, "int8", None, None)]:
        (tmp_path / name).mkdir()
        extra = {"observer": stated} if stated else {}
        (tmp_path / name / "summary.json").write_text(json.dumps(summary(bits, 0.2, 0, arithmetic=arithmetic,
                                                                         **extra)))
        if quant:
            (tmp_path / name / "config.toml").write_text(f"seed = 0\n[quant]\n{quant}\n")
    # the summary wins over the config; behind the float stage no observer is used
    assert [s["observer"] for s in read_summaries(tmp_path)] == ["mse", "percentile", "minmax", "minmax"]


def test_read_summaries_takes_the_quantizer_from_the_run_config(tmp_path):
    for name, bits, quant in [("a", 4, 'latent_mode = "clip"\nlatent_per_channel = true'),
                              ("b", 4, 'latent_mode = "shift"\nlatent_per_channel = false'),
                              ("c", 32, 'latent_mode = "clip"\nlatent_per_channel = false'),
                              ("d", 4, None)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary(bits, 0.2, 0)))
        if quant:
            (tmp_path / name / "config.toml").write_text(f"seed = 0\n[quant]\n{quant}\n")
    # FP32 LRs have no quantizer; a run without config.toml is a shift run
    assert [s["quantizer"] for s in read_summaries(tmp_path)] == ["clip per-channel", "shift", "shift", "shift"]


def test_run_names_separate_cells():
    def name(**options):
        return run_name(resolve_config(None, {"lr_layer": 19, "replays": 750, "seed": 2, **options}))

    assert name(bits=4) == "L19_Q4_N750_s2"
    assert name(bits=4, latent_mode="clip") == "L19_Q4_clip_N750_s2"
    assert name(bits=4, latent_mode="clip", latent_per_channel=True) == "L19_Q4_clippc_N750_s2"
    assert name(bits=32, latent_mode="clip") == "L19_Q32_N750_s2"  # FP32 LRs: no quantizer
    assert name(bits=32, frozen="int8") == "L19_Q32_int8_N750_s2"
    assert name(bits=8, observer="mse") == "L19_Q8_mse_N750_s2"
    assert name(bits=4, latent_mode="clip", observer="percentile") == "L19_Q4_clip_percentile_N750_s2"
    assert name(bits=32, frozen="int8", observer="mse") == "L19_Q32_int8_mse_N750_s2"
    assert name(bits=32, observer="mse") == "L19_Q32_N750_s2"  # float stage: no observer


def test_sweep_with_clipping_adds_rows_beside_the_shift(tmp_path, weights_file):
    base = tmp_path / "base.toml"
    base.write_text(f'[model]\nres = 32\nweights = "{weights_file}"\n[data]\nframes = 2\n')
    common = ["--config", base, "--replays", "20", "--lr-layers", "19", "--seeds", "0",
              "--scenario", "nicv2_79", "--epochs", 1, "--out", tmp_path / "sw"]
    code, _, err = cli("sweep", "--bits", "32,4", *common)
    assert code == 0, err
    code, out, err = cli("sweep", "--bits", "32,4", "--latent-mode", "clip", "--latent-per-channel", *common)
    assert code == 0, err
    assert "[1/2]" not in out and "[2/2] L19_Q4_clippc_N20_s0" in out  # FP32 cell reused
    # The plan comes first; its estimate rests on the two runs the first command left.
    plan = out.splitlines()[0]
    assert plan.startswith(f"plan: 2 cells, 2 runs in {tmp_path / 'sw'}; 1 already finished (skipped), 1 to run on "
                           "local: 1 worker process × 1 thread; estimated time: ~")  # no more workers than runs
    assert plan.endswith("per run, the mean wall time of 2 finished runs here)")
    table = (tmp_path / "sw" / "sweep.md").read_text()
    # 20 LRs of 512 values at 4 bits: 20 * 256 = 5,120 B whatever the quantizer
    assert "| 19 | 4 | 20 | 5,120 |" in table and "| 19 | 4 (clip per-channel) | 20 | 5,120 |" in table
    assert sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir()) == [
        "L19_Q32_N20_s0", "L19_Q4_N20_s0", "L19_Q4_clippc_N20_s0"]


def finished(folder, seconds):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"wall_seconds": seconds}))
    return folder


def test_plan_counts_cells_runs_finished_runs_and_estimates_the_time(tmp_path):
    dirs = [tmp_path / f"run{i}" for i in range(6)]
    assert plan_text(3, dirs, tmp_path, skip_finished=True) == (
        f"plan: 3 cells, 6 runs in {tmp_path}; 0 already finished (skipped), 6 to run; "
        "estimated time: no estimate yet (no finished run in this folder)")
    finished(dirs[0], 100.0)
    finished(tmp_path / "other_cell", 200.0)  # a run of another command in the same folder counts for time
    assert plan_text(3, dirs, tmp_path, skip_finished=True) == (
        f"plan: 3 cells, 6 runs in {tmp_path}; 1 already finished (skipped), 5 to run; "
        "estimated time: ~13 min (2 min 30 s per run, the mean wall time of 2 finished runs here)")
    assert plan_text(3, dirs, tmp_path, skip_finished=False).startswith(
        f"plan: 3 cells, 6 runs in {tmp_path}; 1 already finished, run again (--no-resume): 6 to run; "
        "estimated time: ~15 min")
    assert plan_text(1, dirs[:1], tmp_path, skip_finished=True).endswith("1 already finished (skipped), 0 to run; "
                                                                         "nothing to run")


def test_durations_read_like_a_person_would_say_them():
    assert [duration_text(s) for s in (45, 89.4, 150, 750, 3599, 3600 * 2 + 5 * 60)] == [
        "45 s", "89 s", "2 min 30 s", "13 min", "1 h 00 min", "2 h 05 min"]


def test_sweep_with_no_options_prints_its_plan_and_dry_run_runs_nothing(tmp_path):
    code, out, err = cli("sweep", "--dry-run", "--out", tmp_path / "sw")
    assert code == 0, err
    # 2 LR layers x 6 Q x 4 N = 48 cells, x 3 seeds = 144 runs
    workers = usable_cores()  # --executor local by default, one worker per core
    assert out == (f"plan: 48 cells, 144 runs in {tmp_path / 'sw'}; 0 already finished (skipped), 144 to run on "
                   f"local: {workers} worker process{'es' * (workers != 1)} × 1 thread; "
                   "estimated time: no estimate yet (no finished run in this folder)\n")
    assert not (tmp_path / "sw").exists()
