"""Write docs/sparse_tradeoff.md (and copy the plot) from a finished sparse sweep folder.

    python scripts/make_sparse_doc.py --sweep runs/sparse-sweep

The sweep is the two commands printed in the document (every model on the INT8 and the float
frozen stage; then BN folded). Besides the sweep's own table and verdicts, the document breaks
the bytes kept for backward of each model's dense adaptive stage into what on-device trainers
choose about (cost model, ``tinycl.report.sparse_table.op_cost`` conventions, per sample): FP32
inputs of weight-gradient ops, BN x̂, ReLU masks at 1 bit (TinyTL) against the FP32 outputs a
plain autograd ReLU keeps; and what each option buys alone and with a 0.5 channel ratio.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

from tinycl.cli.sparse_sweep import build_rows
from tinycl.device.memory import FP32_BYTES
from tinycl.models.registry import default_lr_layer
from tinycl.report.sparse_table import markdown_table, op_cost, verdict

COMMANDS = [
    "tinycl sparse-sweep --models mobilenet_v1,mobilenet_v2,phinet --frozen auto,float --bias-only --mix 0.25 "
    "--seeds 0,1,2 --scenario ci --labels category --out runs/sparse-sweep",
    "tinycl sparse-sweep --models mobilenet_v1,mobilenet_v2,phinet --ratios 1,0.5,0.25 --norms fold "
    "--seeds 0,1,2 --scenario ci --labels category --out runs/sparse-sweep",
]


def kept_terms(model: str, sparse: str) -> dict[str, int]:
    """Bytes kept for backward per sample, by kind, of ``model``'s adaptive stage at its default
    LR layer (width 0.25, 64 px, batch renorm) under ``sparse``."""
    import torch

    from tinycl.config import parse_sparse_spec
    from tinycl.models import create_model, layer_table
    from tinycl.train.sparse import SparseUpdateConfig, backward_ops, sparsify
    from tinycl.train.stages import prepare_stages

    lr_layer = default_lr_layer(model)
    torch.manual_seed(0)
    net = create_model(model, num_classes=10, width=0.25)
    shape = layer_table(net, 64)[lr_layer].out_shape
    _, adaptive = prepare_stages(net, lr_layer, "brn")
    spec = parse_sparse_spec(sparse)
    if spec.ratios:
        sparsify(adaptive, SparseUpdateConfig(ratios=spec.ratios, seed=0), first_index=lr_layer + 1,
                 layer_names=net.layer_names()[lr_layer + 1 :])
    terms = {"inputs": 0, "x_hat": 0, "masks_1bit": 0, "relu_outputs_fp32": 0}
    bucket = {"norm": "x_hat", "relu": "masks_1bit", "conv": "inputs", "linear": "inputs"}
    for op in backward_ops(adaptive, shape):
        if op.kind in bucket:  # the sweep's own cost model, op by op
            terms[bucket[op.kind]] += op_cost(op).kept_bytes
        if op.kind == "relu":  # what a plain autograd ReLU keeps instead: its FP32 output
            terms["relu_outputs_fp32"] += FP32_BYTES * math.prod(op.out_shape)
    return terms


def memory_options_table(models: list[str]) -> list[str]:
    from tinycl.cli.sparse_sweep import conv_layers_above

    lines = ["| model (LR layer) | FP32 inputs of weight grads | BN x̂ | ReLU masks, 1 bit (FP32 outputs) | kept, as "
             "tinycl counts | FP32 ReLU outputs instead of masks | BN folded (`--norm fold`) | ×0.5 channels | "
             "×0.5 + BN folded |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in models:
        above = conv_layers_above(model, 0.25, 64, default_lr_layer(model))
        dense = kept_terms(model, "")
        half = kept_terms(model, ",".join(f"{k}=0.5" for k in above))
        base = dense["inputs"] + dense["x_hat"] + dense["masks_1bit"]

        def cell(total: int, base: int = base) -> str:
            return f"{total:,} ({base / total:.2f}×)"

        lines.append(
            f"| {model} ({default_lr_layer(model)}) | {dense['inputs']:,} | {dense['x_hat']:,} | "
            f"{dense['masks_1bit']:,} ({dense['relu_outputs_fp32']:,}) | {base:,} | "
            f"{cell(base - dense['masks_1bit'] + dense['relu_outputs_fp32'])} | "
            f"{cell(dense['inputs'] + dense['masks_1bit'])} | "
            f"{cell(half['inputs'] + half['x_hat'] + half['masks_1bit'])} | "
            f"{cell(half['inputs'] + half['masks_1bit'])} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="the sweep folder (both commands' --out)")
    parser.add_argument("--out", default="docs/sparse_tradeoff.md")
    args = parser.parse_args()
    sweep = Path(args.sweep)
    rows = build_rows(sweep)
    text = [
        "# Structured sparse update: the trade-off on the three backbones",
        "",
        "Synthetic CORe50-like benchmark, class-incremental (`--scenario ci --labels category`: 5 tasks of 2 new "
        "categories, 10 classes, chance 10 %), latent replay with 750 LRs (8-bit behind the INT8 frozen stage; "
        "FP32 behind the float one), 4 epochs per task, SGD momentum 0.9, weight decay 5e-4 (`ChannelSGD`), batch "
        "renormalization unless the row says `norm=fold`, random channels per step from the run's PCG32 stream; "
        "3 seeds per row. Each model at width 0.25, 64 px, its default LR layer (MobileNetV1 19: layers 20–26 "
        "train; MobileNetV2 16: block 17 and the 1280-channel conv; PhiNet 5: blocks 5–7) with its shipped "
        "weights. Produced by these two commands (then `python scripts/make_sparse_doc.py --sweep "
        "runs/sparse-sweep`):",
        "",
        "```bash",
        *COMMANDS,
        "```",
        "",
        "Settings: `dense`; `all×r` = input-channel ratio r on every conv layer above the LR layer (pooling and "
        "classifier dense); `bias-only` = every such layer trains biases / BN affine only; a per-layer mix = the "
        "first half of those layers (nearest the LR layer: the largest activations) at 0.25, the rest dense; "
        "`norm=fold` = BN folded into its conv with frozen statistics (nothing kept for a BN backward). Rows of "
        "one model and frozen stage compare with its dense batch-renorm row. Columns as in "
        "`tinycl sparse-sweep`: backward MACs and bytes kept for backward per sample (cost model), saved-tensor "
        "bytes of one real 128-sample step (`live_saved_bytes`), host ms per step; ± = standard deviation over "
        "seeds.",
        "",
        markdown_table(rows, 128).rstrip(),
        "",
        *[f"- {line}" for line in verdict(rows)],
        "",
        "![trade-off](sparse_tradeoff.png)",
        "",
        "## What the bytes kept for backward are made of, and what each option buys",
        "",
        "Per sample, dense adaptive stage, cost model (bytes); in parentheses the saving against the column "
        "'kept, as tinycl counts' (FP32 inputs of weight gradients + BN x̂ + 1-bit ReLU masks). 'FP32 ReLU "
        "outputs' is what a plain autograd ReLU keeps instead of a 1-bit mask (TinyTL's point). Produced by "
        "`python scripts/make_sparse_doc.py` from `tinycl.train.sparse.backward_ops`:",
        "",
        *memory_options_table(["mobilenet_v1", "mobilenet_v2", "phinet"]),
        "",
    ]
    out = Path(args.out)
    out.write_text("\n".join(text) + "\n")
    png = sweep / "sparse_tradeoff.png"
    if png.is_file():
        shutil.copyfile(png, out.parent / "sparse_tradeoff.png")
    print(out.read_text(), end="")


if __name__ == "__main__":
    main()
