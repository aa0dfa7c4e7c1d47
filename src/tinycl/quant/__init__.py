"""Quantization: BN folding, observers, INT8 integer-only frozen stage, Q-bit latents, packing."""

from tinycl.quant.fidelity import LayerError, compare_accuracy, layer_errors
from tinycl.quant.fixed_point import (
    quantize_multiplier,
    requantize_int64,
    requantize_int64_reference,
    requantize_scalar,
)
from tinycl.quant.fold import fold_bn
from tinycl.quant.int_frozen import (
    IntConvLayer,
    IntFrozenStage,
    conv2d_int64_reference,
    depthwise_conv2d_int64_reference,
    pointwise_conv2d_int64_reference,
    quantize_frozen_stage,
    quantize_weight_s8,
)
from tinycl.quant.latent import LatentQuantizer
from tinycl.quant.observers import (
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
    scale_from_bound,
)
from tinycl.quant.packing import check_bits, pack_bits, packed_bytes, packed_row_bytes, unpack_bits

__all__ = [
    "IntConvLayer",
    "IntFrozenStage",
    "LatentQuantizer",
    "LayerError",
    "MSEObserver",
    "MinMaxObserver",
    "PercentileObserver",
    "check_bits",
    "compare_accuracy",
    "conv2d_int64_reference",
    "depthwise_conv2d_int64_reference",
    "fold_bn",
    "layer_errors",
    "make_observer",
    "pack_bits",
    "packed_bytes",
    "packed_row_bytes",
    "pointwise_conv2d_int64_reference",
    "quantize_frozen_stage",
    "quantize_multiplier",
    "quantize_weight_s8",
    "requantize_int64",
    "requantize_int64_reference",
    "requantize_scalar",
    "scale_from_bound",
    "unpack_bits",
]
