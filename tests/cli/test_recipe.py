import dataclasses

from conftest import cli, read_summary, small_run_args

from tinycl.config import RECIPES, RunConfig, apply_recipe, load_toml, recipe_overrides


def test_the_tinycl_preset_is_the_defaults_and_both_presets_set_the_same_keys():
    assert RunConfig() == apply_recipe(RunConfig(), "tinycl")
    assert set(RECIPES["tinycl"]) == set(RECIPES["ar1star"])
    ar1 = apply_recipe(RunConfig(), "ar1star")
    # REFERENCES.md, "AR1* with latent replay, as published".
    assert (ar1.train.lr, ar1.train.inc_lr, ar1.train.brn_momentum, ar1.train.brn_inc_momentum, ar1.train.brn_ramp) \
        == (0.001, 5e-5, 0.01, 5e-5, 4.1e-5)
    assert (ar1.replay.replays, ar1.replay.policy, ar1.train.cwr, ar1.train.shuffle, ar1.train.replay_order) \
        == (1500, "ar1", True, "batch", "memory")
    assert ar1.train.pad_first_batch and ar1.train.reset_sgd and recipe_overrides(ar1) == {}


def test_ar1star_run_writes_its_recipe_and_overrides_and_reruns_from_config(tmp_path, weights_file):
    out = tmp_path / "a"
    code, _, err = cli(*small_run_args(weights_file, out, "--recipe", "ar1star"))
    assert code == 0, err
    summary = read_summary(out)
    # small_run_args sets --epochs 1 and --replays 60: both are listed as changes to the preset.
    assert summary["recipe"] == "ar1star"
    assert summary["recipe_overrides"] == {"train.epochs": 1, "replay.replays": 60}
    config = load_toml(out / "config.toml")
    assert config["train"]["recipe"] == "ar1star" and config["train"]["inc_lr"] == 5e-5
    assert config["train"]["shuffle"] == "batch" and config["replay"]["policy"] == "ar1"
    code, _, err = cli("run", "--config", out / "config.toml", "--out", tmp_path / "b", "--quiet")
    assert code == 0, err
    assert read_summary(tmp_path / "b") == summary


def test_a_config_naming_a_recipe_gets_its_preset_and_the_command_line_wins(tmp_path, weights_file):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nrecipe = "ar1star"\n')
    out = tmp_path / "o"
    code, _, err = cli(*small_run_args(weights_file, out, "--config", toml, "--inc-lr", 0.0001))
    assert code == 0, err
    config = load_toml(out / "config.toml")
    assert config["train"]["cwr"] is True and config["train"]["inc_lr"] == 0.0001
    assert read_summary(out)["recipe_overrides"]["train.inc_lr"] == 0.0001


def test_unknown_recipe_is_one_line(tmp_path, weights_file):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nrecipe = "sgd-forever"\n')
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "o", "--config", toml))
    assert code == 2 and err == "tinycl: error: unknown recipe 'sgd-forever'; known: tinycl, ar1star\n"
    code, _, err = cli(*small_run_args(weights_file, tmp_path / "o", "--recipe", "x"))
    assert code == 2 and "'x' is not one of 'tinycl', 'ar1star'" in err


def test_recipe_fields_are_in_the_config_dataclasses():
    fields = {(s, f.name) for s in ("train", "replay") for f in dataclasses.fields(getattr(RunConfig(), s))}
    assert set(RECIPES["ar1star"]) <= fields
