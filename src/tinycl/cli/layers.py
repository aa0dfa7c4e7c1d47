"""``tinycl layers MODEL``: the per-layer table."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from tinycl.errors import TinyclError
from tinycl.models import create_model, layer_table


@click.command("layers")
@click.argument("model")
@click.option("--res", type=int, default=128, show_default=True, help="input resolution (px)")
@click.option("--width", type=float, default=1.0, show_default=True, help="width multiplier")
@click.option("--num-classes", type=int, default=50, show_default=True, help="head classes")
def layers(model: str, res: int, width: float, num_classes: int) -> None:
    """Print index, name, type, output shape, parameters and MACs of every layer of MODEL."""
    if res < 8:
        raise TinyclError(f"--res must be >= 8, got {res}")
    if width <= 0:
        raise TinyclError(f"--width must be > 0, got {width}")
    net = create_model(model, num_classes=num_classes, width=width)
    rows = layer_table(net, res)
    table = Table(title=f"{model} width {width} at {res}x{res}")
    for col in ("index", "name", "type", "output", "params", "MACs"):
        table.add_column(col, justify="right" if col in ("index", "params", "MACs") else "left")
    for r in rows:
        shape = "x".join(str(d) for d in r.out_shape)
        table.add_row(str(r.index), r.name, r.kind, shape, f"{r.params:,}", f"{r.macs:,}")
    total_macs = sum(r.macs for r in rows)
    total_params = sum(r.params for r in rows)
    table.add_row("", "total", "", "", f"{total_params:,}", f"{total_macs:,}")
    Console(width=120).print(table)
    print(f"total: {total_macs / 1e6:.1f} M MACs, {total_params / 1e6:.2f} M params")
