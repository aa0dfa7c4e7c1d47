"""Quantization: BN folding, observers, INT8 integer-only frozen stage (residual blocks too), Q-bit latents, packing."""

from tinycl.quant.convert import quantize_frozen_stage
from tinycl.quant.fidelity import LayerError, compare_accuracy, layer_errors
from tinycl.quant.fixed_point import (
    quantize_multiplier,
    requantize_int64,
    requantize_int64_reference,
    requantize_scalar,
)
from tinycl.quant.fold import fold_bn
from tinycl.quant.int_blocks import (
    IntAdd,
    IntBlock,
    IntConvUnit,
    add_int64_reference,
    make_int_add,
    relu6_code_max,
)
from tinycl.quant.int_frozen import (
    IntConvLayer,
    IntFrozenStage,
    conv2d_int64_reference,
    depthwise_conv2d_int64_reference,
    pointwise_conv2d_int64_reference,
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
    "IntAdd",
    "IntBlock",
    "IntConvLayer",
    "IntConvUnit",
    "IntFrozenStage",
    "LatentQuantizer",
    "LayerError",
    "MSEObserver",
    "MinMaxObserver",
    "PercentileObserver",
    "add_int64_reference",
    "check_bits",
    "compare_accuracy",
    "conv2d_int64_reference",
    "depthwise_conv2d_int64_reference",
    "fold_bn",
    "layer_errors",
    "make_int_add",
    "make_observer",
    "pack_bits",
    "packed_bytes",
    "packed_row_bytes",
    "pointwise_conv2d_int64_reference",
    "quantize_frozen_stage",
    "quantize_multiplier",
    "quantize_weight_s8",
    "relu6_code_max",
    "requantize_int64",
    "requantize_int64_reference",
    "requantize_scalar",
    "scale_from_bound",
    "unpack_bits",
]
