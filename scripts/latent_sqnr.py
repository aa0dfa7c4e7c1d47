"""Reconstruction SQNR of the Q-bit latent quantizers on a run's own LR-layer latents.

    TINYCL_CACHE=/tmp/tc1 python scripts/latent_sqnr.py [--lr-layer 19] [--bits 4,3] [--config F]

Builds the run's INT8 frozen stage exactly as ``tinycl run`` does (calibrated on CL batch 0),
takes the UINT8 latents of batch 0 (the quantizers' calibration set) and of every later batch
(the latents the learner meets afterwards), and prints per Q and quantizer (shift, clip, clip
per-channel): the SQNR of ``decode(encode(u8))`` against ``u8`` on both sets, the clip value
(per tensor; median over channels per channel) and the share of later values above it. The
latent scale is left at 1: SQNR does not depend on it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tinycl.cli.run import resolve_config
from tinycl.models import layer_table
from tinycl.quant import LatentQuantizer
from tinycl.quant.fidelity import sqnr_db
from tinycl.train.encoder import LatentEncoder
from tinycl.train.experiment import Events, build_model, load_data
from tinycl.train.stages import prepare_stages

QUANTIZERS = (("shift", False), ("clip", False), ("clip", True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a run's config.toml (default: the embedded benchmark)")
    ap.add_argument("--lr-layer", type=int, default=19)
    ap.add_argument("--bits", default="4,3", help="comma-separated Q values, 1..8")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = resolve_config(args.config, {"lr_layer": args.lr_layer, "bits": 8})
    data = load_data(cfg)
    model = build_model(cfg, data, Events())
    frozen, _ = prepare_stages(model, cfg.model.lr_layer, cfg.train.norm)
    source = data.source
    calib_images, _ = source.batch(0)
    q = cfg.quant
    # 8-bit shift: the stage's UINT8 output itself (the identity quantizer)
    latent_shape = layer_table(model, cfg.model.res)[cfg.model.lr_layer].out_shape
    encoder = LatentEncoder(frozen, latent_shape, 8, arithmetic="int8", calib_images=calib_images,
                            weight_quant=q.weight_quant, observer=q.observer, latent_mode="shift",
                            latent_per_channel=False)
    calib = encoder.frozen_u8(calib_images)
    later = np.concatenate([encoder.frozen_u8(source.batch(i)[0]) for i in range(1, source.num_batches)])
    print(f"LR layer {cfg.model.lr_layer}: latents {calib.shape[1:]}, calibration {len(calib)} "
          f"(batch 0), measured {len(later)} (batches 1-{source.num_batches - 1})")
    print("| Q | quantizer | SQNR batch 0 (dB) | SQNR later (dB) | clip (UINT8) | later values above clip |")
    print("|---:|---|---:|---:|---:|---:|")
    for bits in (int(b) for b in args.bits.split(",")):
        for mode, per_channel in QUANTIZERS:
            quant = LatentQuantizer(bits, mode, per_channel).calibrate(calib)
            name = mode + (" per-channel" if per_channel else "")
            snr = [sqnr_db(torch.from_numpy(u8.astype(np.float32)), torch.from_numpy(quant.roundtrip(u8)))
                   for u8 in (calib, later)]
            if mode == "shift":
                clip_text, above = "—", "—"
            else:
                clip = quant.clip_u8.reshape(1, -1, 1)
                above_share = float((quant.channel_view(later) > clip).mean())
                clip_text = str(int(np.median(quant.clip_u8)))
                above = f"{100 * above_share:.1f} %"
            print(f"| {bits} | {name} | {snr[0]:.1f} | {snr[1]:.1f} | {clip_text} | {above} |")


if __name__ == "__main__":
    main()
