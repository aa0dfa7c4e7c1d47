"""``tinycl layers MODEL``: the per-layer table, with the model's default LR layer marked."""

from __future__ import annotations

import math

import click

from tinycl.config import ModelConfig
from tinycl.errors import TinyclError


# Defaults are ``tinycl run``'s (config.ModelConfig), so the table shows the network a plain run
# trains. torch, rich and the models load inside the command: ``tinycl --help`` stays fast.
@click.command("layers")
@click.argument("model")
@click.option("--res", type=int, default=ModelConfig.res, show_default=True, help="input resolution (px)")
@click.option("--width", type=float, default=ModelConfig.width, show_default=True, help="width multiplier")
@click.option("--num-classes", type=int, default=50, show_default=True, help="head classes")
def layers(model: str, res: int, width: float, num_classes: int) -> None:
    """Print index, name, type, output shape, parameters and MACs of every layer of MODEL, and
    the LR layer ``tinycl run`` splits it at by default."""
    from rich.console import Console
    from rich.table import Table

    from tinycl.models import create_model, layer_table
    from tinycl.models.registry import default_lr_layer

    if res < 8:
        raise TinyclError(f"--res must be >= 8, got {res}")
    if width <= 0:
        raise TinyclError(f"--width must be > 0, got {width}")
    net = create_model(model, num_classes=num_classes, width=width)
    rows = layer_table(net, res)
    try:
        lr_layer: int | None = default_lr_layer(model)
    except TinyclError:  # a model registered without one: the table is still useful
        lr_layer = None
    table = Table(title=f"{model} width {width:g} at {res}x{res}")
    for col in ("index", "name", "type", "output", "params", "MACs", "split"):
        table.add_column(col, justify="right" if col in ("index", "params", "MACs") else "left")
    for r in rows:
        shape = "x".join(str(d) for d in r.out_shape)
        split = "default LR layer" if r.index == lr_layer else ""
        table.add_row(str(r.index), r.name, r.kind, shape, f"{r.params:,}", f"{r.macs:,}", split,
                      style="bold" if split else None)
    total_macs = sum(r.macs for r in rows)
    total_params = sum(r.params for r in rows)
    table.add_row("", "total", "", "", f"{total_params:,}", f"{total_macs:,}", "")
    Console(width=120).print(table)
    print(f"total: {total_macs / 1e6:.1f} M MACs, {total_params / 1e6:.2f} M params")
    if lr_layer is None:
        print("default LR layer: none registered; give tinycl run --lr-layer")
        return
    info = rows[lr_layer]
    frozen_macs = sum(r.macs for r in rows[: lr_layer + 1])
    values = math.prod(info.out_shape)
    print(f"default LR layer: {lr_layer} ({info.name}, {'x'.join(map(str, info.out_shape))} = {values:,} values "
          f"per latent): frozen stage 0..{lr_layer} ({frozen_macs / 1e6:.2f} M MACs), adaptive stage "
          f"{lr_layer + 1}..{rows[-1].index}; tinycl run --lr-layer chooses another")
