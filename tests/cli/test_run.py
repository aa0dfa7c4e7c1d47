import json

import pytest
from conftest import cli, read_summary, small_run_args, write_arrays


def test_run_writes_contract_files_and_is_deterministic(tmp_path, weights_file):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = cli(*small_run_args(weights_file, a))
    assert code == 0, err
    assert "final accuracy" in out
    code, _, err = cli(*small_run_args(weights_file, b))
    assert code == 0, err
    sa, sb = read_summary(a), read_summary(b)
    assert sa == sb
    for key in ("final_accuracy", "average_accuracy", "lr_memory_bytes", "lr_bits", "replays", "lr_layer",
                "model", "benchmark", "scenario", "num_batches", "seed"):
        assert key in sa
    assert sa["num_batches"] == 79 and sa["lr_bits"] == 8 and sa["replays"] == 60
    # Default: 60 8-bit LRs of 128x2x2 values + one label byte each.
    assert sa["latent_values"] == 512 and sa["lr_memory_bytes"] == 60 * 512 and sa["lr_label_bytes"] == 60
    assert sa["frozen_arithmetic"] == "int8"
    assert (sa["observer"], sa["weight_quant"], sa["latent_mode"], sa["latent_per_channel"]) == \
        ("minmax", "per-channel", "shift", False)
    assert 0 <= sa["fidelity"]["int_accuracy"] <= 1 and len(sa["fidelity"]["layers"]) == 20
    lines = (a / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 79 and json.loads(lines[-1])["batch"] == 78
    assert (a / "accuracy.png").stat().st_size > 1000
    # config.toml reruns the same experiment.
    code, _, err = cli("run", "--config", a / "config.toml", "--out", tmp_path / "c", "--quiet")
    assert code == 0, err
    assert read_summary(tmp_path / "c") == sa


def test_fp32_baseline_bytes(tmp_path, weights_file):
    code, _, err = cli(*small_run_args(weights_file, tmp_path, "--bits", 32))
    assert code == 0, err
    s = read_summary(tmp_path)
    assert s["frozen_arithmetic"] == "float" and s["lr_memory_bytes"] == 60 * 512 * 4 and s["fidelity"] is None


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_run_reports_exact_packed_bytes(tmp_path, weights_file, bits):
    code, _, err = cli(*small_run_args(weights_file, tmp_path, "--bits", bits))
    assert code == 0, err
    s = read_summary(tmp_path)
    assert s["lr_bits"] == bits and s["frozen_arithmetic"] == "int8"
    assert s["lr_memory_bytes"] == 60 * -(-512 * bits // 8)


def test_naive_and_raw_replay_baselines(tmp_path, weights_file):
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "n", "--strategy", "naive"))
    assert code == 0, err
    assert read_summary(tmp_path / "n")["lr_memory_bytes"] == 0
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "r", "--strategy", "raw-replay"))
    assert code == 0, err
    s = read_summary(tmp_path / "r")
    # Equal bytes: 60 8-bit LRs of 512 B buy 10 raw 32x32x3 images of 3072 B.
    assert s["replays"] == 10 and s["lr_memory_bytes"] == 10 * 3072


def test_arrays_benchmark(tmp_path, weights_file):
    data = tmp_path / "d.npz"
    write_arrays(data)
    code, _, err = cli("run", "--benchmark", "arrays", "--data-root", data, "--res", 32, "--epochs", 1,
                       "--weights", weights_file, "--out", tmp_path / "o", "--quiet", "--scenario", "ci")
    assert code == 0, err
    s = read_summary(tmp_path / "o")
    assert s["num_classes"] == 4 and s["num_batches"] == 2  # plain labels: tasks of 2 new classes


ERROR_CASES = [
    (["--model", "resnet9"], "unknown model 'resnet9'"),
    (["--lr-layer", "40"], "LR layer 40 out of range"),
    (["--replays", "-5"], "--replays must be in 0..10000000, got -5"),
    (["--bits", "9"], "--bits must be 1..8 or 32, got 9"),
    (["--config", "/nonexistent/x.toml"], "config file not found"),
    (["--benchmark", "folder", "--data-root", "/nonexistent/dir"], "data folder not found: /nonexistent/dir"),
    (["--benchmark", "arrays"], "--benchmark arrays needs --data-root"),
    (["--res", "abc"], "'abc' is not a valid integer"),
]


@pytest.mark.parametrize("args,message", ERROR_CASES)
def test_bad_input_one_line_exit_2(tmp_path, args, message):
    code, out, err = cli("run", "--out", tmp_path / "o", "--quiet", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinycl: error:") and message in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_unreadable_config_and_wrong_image_shape(tmp_path, weights_file):
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = [unclosed")
    code, _, err = cli("run", "--config", bad, "--quiet")
    assert code == 2 and "is not valid TOML" in err and len(err.strip().splitlines()) == 1
    bad.write_text("[train]\nepochs = 'four'\n")
    code, _, err = cli("run", "--config", bad, "--quiet")
    assert code == 2 and "train.epochs: expected int" in err
    data = tmp_path / "d.npz"
    write_arrays(data, res=24)
    code, _, err = cli("run", "--benchmark", "arrays", "--data-root", data, "--res", 32, "--weights", weights_file,
                       "--quiet", "--out", tmp_path / "o")
    assert code == 2 and "images are 24x24 but the model expects 32x32" in err


def test_existing_results_survive_a_failed_run(tmp_path, weights_file):
    out = tmp_path / "keep"
    code, _, _ = cli(*small_run_args(weights_file, out))
    assert code == 0
    before = (out / "summary.json").read_text()
    config = (out / "config.toml").read_text()
    code, _, _ = cli(*small_run_args(weights_file, out, "--lr-layer", "99"))
    assert code == 2
    assert (out / "summary.json").read_text() == before
    # A checkpointed run that fails on its data leaves the finished run's config with it.
    data = tmp_path / "d.npz"
    write_arrays(data, res=24)
    code, _, err = cli(*small_run_args(weights_file, out, "--checkpoint-every", 1, "--benchmark", "arrays",
                                       "--data-root", data))
    assert code == 2 and "images are 24x24 but the model expects 32x32" in err
    assert (out / "config.toml").read_text() == config
    assert (out / "summary.json").read_text() == before


def test_layers_command():
    code, out, _ = cli("layers", "mobilenet_v1", "--width", 1.0, "--res", 128)
    assert code == 0
    assert "185.4 M MACs, 3.26 M params" in out
    assert "512x8x8" in out


def test_sweep_writes_table_plot_and_resumes(tmp_path, weights_file):
    base = tmp_path / "base.toml"
    base.write_text(f'[model]\nres = 32\nweights = "{weights_file}"\n[data]\nframes = 2\n')
    args = ["sweep", "--config", base, "--bits", "32,4", "--replays", "20", "--lr-layers", "19",
            "--seeds", "0,1", "--scenario", "nicv2_79", "--epochs", 1, "--out", tmp_path / "sw"]
    code, out, err = cli(*args)
    assert code == 0, err
    table = (tmp_path / "sw" / "sweep.md").read_text()
    # 20 LRs of 512 values: 40,960 B in FP32, 20 * ceil(512 * 4 / 8) = 5,120 B at 4 bits.
    assert "| 19 | 32 | 20 | 40,960 |" in table and "| 19 | 4 | 20 | 5,120 |" in table
    assert table.count("| 2 |") == 2
    assert (tmp_path / "sw" / "accuracy_vs_memory.png").stat().st_size > 1000
    code, out, _ = cli(*args)
    assert code == 0 and "[1/4]" not in out  # every run already done
    code, out, _ = cli("sweep", "--table-only", "--out", tmp_path / "sw")
    assert code == 0 and (tmp_path / "sw" / "sweep.md").read_text() == table


def test_sweep_rejects_bad_lists(tmp_path):
    code, _, err = cli("sweep", "--bits", "8,x", "--out", tmp_path)
    assert code == 2 and "--bits must be a comma-separated list of integers" in err


def test_sparse_update_option(tmp_path, weights_file):
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "s", "--sparse", "20=0.25,22=0.5"))
    assert code == 0, err
    assert read_summary(tmp_path / "s")["num_batches"] == 79
    for bad, message in (("20=1.5", "must be LAYER=RATIO with RATIO in (0, 1]"), ("99=0.5", "unknown layer '99'"),
                         ("20", "must be LAYER=RATIO")):
        code, _, err = cli(*small_run_args(weights_file, tmp_path / "x", "--sparse", bad))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_sparse_spec_forms():
    from tinycl.config import parse_sparse_spec

    spec = parse_sparse_spec("20=0.25, 22=bias ,head=1")
    assert spec.ratios == {"20": 0.25, "head": 1.0} and spec.bias_only == ("22",) and spec.fixed == {}
    spec = parse_sparse_spec("24=channels:5/0/3/3,22=bias")
    assert spec.fixed == {"24": [0, 3, 5]} and spec.ratios == {"24": 1.0} and spec.bias_only == ("22",)


def test_sparse_bias_only_and_fixed_channels_run(tmp_path, weights_file):
    """Bias-only layer 22 and fixed channels 0, 1, 2 of layer 24 through the CLI."""
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "s", "--sparse", "22=bias,24=channels:0/1/2"))
    assert code == 0, err
    assert "sparse = \"22=bias,24=channels:0/1/2\"" in (tmp_path / "s" / "config.toml").read_text()
    for bad, message in (
        ("24=channels:0/x", "--sparse entry '24=channels:0/x': channels must be integers separated by '/'"),
        ("24=channels:0/999", "sparse update: fixed channels for layer '24' must be in 0..127"),
        ("24=channels:1,20=0.5", "--sparse: fixed channel lists and ratios cannot be mixed in one spec"),
        ("22=bias,22=0.5", "one entry per layer"),
    ):
        code, _, err = cli(*small_run_args(weights_file, tmp_path / "x", "--sparse", bad))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_image_folder_benchmark_and_recipe_options(tmp_path, weights_file):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cup", "mug"):
            for session in ("s1", "s2"):
                folder = tmp_path / "data" / split / cls / session
                folder.mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    code, _, err = cli("run", "--benchmark", "folder", "--data-root", tmp_path / "data", "--res", 32, "--epochs", 1,
                       "--weights", weights_file, "--out", tmp_path / "o", "--quiet", "--cwr", "--policy",
                       "class-balanced", "--replays", 10, "--scenario", "ni")
    assert code == 0, err
    s = read_summary(tmp_path / "o")
    assert s["num_classes"] == 2 and s["num_batches"] == 2 and s["train_images"] == 24 and s["test_images"] == 8
    assert s["replay_policy"] == "class-balanced"
    bad = tmp_path / "data" / "train" / "cup" / "s1" / "big.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(bad)
    code, _, err = cli("run", "--benchmark", "folder", "--data-root", tmp_path / "data", "--res", 32,
                       "--weights", weights_file, "--out", tmp_path / "o2", "--quiet")
    assert code == 2 and "big.png is 40x40, the model expects 32x32" in err


def test_class_incremental_category_run(tmp_path, weights_file):
    code, _, err = cli("run", "--res", 32, "--frames", 2, "--scenario", "ci", "--labels", "category", "--epochs", 1,
                       "--replays", 40, "--weights", weights_file, "--out", tmp_path, "--quiet")
    assert code == 0, err
    s = read_summary(tmp_path)
    assert s["num_batches"] == 5 and s["num_classes"] == 10 and len(s["per_class_accuracy"]) == 10


def test_latent_cache_reuse_gives_the_same_summary(tmp_path, weights_file, monkeypatch):
    monkeypatch.setenv("TINYCL_CACHE", str(tmp_path / "fresh-cache"))
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "a", "--bits", 4))
    assert code == 0, err
    files = sorted((tmp_path / "fresh-cache" / "latents").rglob("*.npz"))
    assert len(files) == 79 + 1  # one per experience, and the test set
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "b", "--bits", 4))
    assert code == 0, err
    assert read_summary(tmp_path / "a") == read_summary(tmp_path / "b")
    files[3].write_bytes(b"corrupt")
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "c", "--bits", 4))
    assert code == 0, err
    assert read_summary(tmp_path / "c") == read_summary(tmp_path / "a")


def test_device_auto_records_the_device_and_cuda_without_a_gpu_is_one_line(tmp_path, weights_file):
    import torch

    code, _, err = cli(*small_run_args(weights_file, tmp_path / "a", "--device", "auto"))
    assert code == 0, err
    assert read_summary(tmp_path / "a")["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        code, _, err = cli(*small_run_args(weights_file, tmp_path / "c", "--device", "cuda"))
        assert code == 2
        assert err == ("tinycl: error: --device cuda: no CUDA device is available here "
                       "(torch.cuda.is_available() is False)\n")
