"""``tinycl --help`` without torch; every option's default in --help; cost --help lists the targets."""

import subprocess
import sys

import click
import pytest

from tinycl.cli import app, main

# Commands whose options are checked here (tinycl run's defaults come from the config
# dataclasses and recipes, and are shown in its help text).
COMMANDS = ["run", "layers", "cost", "report", "sweep", "sparse-sweep", "export"]

NO_TORCH = """
import sys
from tinycl.cli import main
for argv in {argvs!r}:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code == 0, (argv, exc.code)
heavy = sorted(m for m in ("torch", "numpy", "matplotlib") if m in sys.modules)
assert not heavy, heavy
"""


def test_help_imports_neither_torch_nor_numpy_nor_matplotlib():
    argvs = [["--help"], *([name, "--help"] for name in COMMANDS)]
    result = subprocess.run([sys.executable, "-c", NO_TORCH.format(argvs=argvs)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Commands:" in result.stdout and "sparse-sweep" in result.stdout


def test_python_m_tinycl_help_works_like_tinycl():
    result = subprocess.run([sys.executable, "-m", "tinycl", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert f"  {name} " in result.stdout


def commands():
    from tinycl.cli import _register

    _register()  # what main() does before parsing
    return app.commands


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_shows_its_default(name):
    command = commands()[name]
    ctx = click.Context(command, info_name=name)
    missing = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "help":
            continue
        _, text = param.get_help_record(ctx)
        if "default:" not in text:
            missing.append(param.opts[0])
    assert not missing, f"tinycl {name}: options without a default in --help: {missing}"


def test_cost_help_lists_every_target(capsys):
    from tinycl.device import target_names

    with pytest.raises(SystemExit):
        main(["cost", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "target: " + " | ".join(target_names()) + " or a TOML file" in out


def test_constants_repeated_for_a_light_help_agree_with_their_source():
    from tinycl.cli import cost, export
    from tinycl.device.estimate import DEFAULT_NEW_IMAGES
    from tinycl.device.targets import target_names
    from tinycl.export.driver import DEFAULT_IMAGES
    from tinycl.export.toolchains import TARGETS

    assert export.EXPORT_TARGETS == tuple(TARGETS) and export.DEFAULT_IMAGES == DEFAULT_IMAGES
    assert cost.DEFAULT_NEW_IMAGES == DEFAULT_NEW_IMAGES
    assert cost.builtin_targets() == target_names()
