"""The C runtime built for the host as a shared library and called through ctypes.

``HostKernels`` has one method per C kernel with the signature of its Python reference in
``tinycl.export.reference`` (numpy arrays in, numpy arrays out, one image in CHW), so tests
can hold every kernel against its reference on random shapes without compiling a program per
case. The library is compiled with the flags of every target (``-std=c99 -ffp-contract=off
-O2 -Wall -Wextra -Werror``) plus ``-shared -fPIC``.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np

from tinycl.export.reference import latent_clip_multipliers
from tinycl.export.toolchains import COMMON_CFLAGS

RUNTIME_DIR = Path(__file__).parent / "runtime"
SHAPE_FIELDS = ("in_channels", "in_height", "in_width", "out_channels", "out_height", "out_width",
                "kernel_h", "kernel_w", "stride", "padding")


class ConvShape(ctypes.Structure):
    """``tinycl_conv_shape`` of tinycl_runtime.h."""

    _fields_ = [(name, ctypes.c_int32) for name in SHAPE_FIELDS]


def build_host_library(out_dir: Path, compiler: str = "gcc") -> Path:
    """Compile every runtime kernel into ``out_dir/libtinycl_runtime.so``; returns its path."""
    out = Path(out_dir) / "libtinycl_runtime.so"
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p) for p in RUNTIME_DIR.glob("*.c"))
    result = subprocess.run([compiler, *COMMON_CFLAGS, "-shared", "-fPIC", "-o", str(out), *sources],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cannot build the runtime for the host:\n{result.stderr[-4000:]}")
    return out


def _array(values, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values), dtype=dtype)


def _ptr(array: np.ndarray | None) -> ctypes.c_void_p | None:
    return None if array is None else array.ctypes.data_as(ctypes.c_void_p)


def out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def conv_shape(in_shape: tuple[int, ...], out_channels: int, kernel: tuple[int, int], stride: int,
               padding: int) -> ConvShape:
    channels, height, width = in_shape
    return ConvShape(channels, height, width, out_channels, out_size(height, kernel[0], stride, padding),
                     out_size(width, kernel[1], stride, padding), kernel[0], kernel[1], stride, padding)


class HostKernels:
    """The runtime's kernels on the host, with the signatures of ``tinycl.export.reference``."""

    def __init__(self, library: Path):
        self.lib = ctypes.CDLL(str(library))
        void_p, i32, shape_p = ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ConvShape)
        conv = [void_p, shape_p, void_p, void_p, void_p, void_p, void_p]
        conv_range = [void_p, shape_p, void_p, void_p, void_p, void_p, i32, i32, void_p]
        signatures = {
            "rgb_u8_to_input_s8": [void_p, i32, i32, i32, void_p, void_p],
            "requantize_u8": [void_p, i32, i32, void_p, void_p, void_p],
            "conv2d_s8": conv, "conv2d_u8": conv, "depthwise_conv2d_u8": conv, "pointwise_conv2d_u8": conv,
            "conv2d_s8_range": conv_range, "depthwise_conv2d_u8_range": conv_range,
            "depthwise_conv2d_s8_range": conv_range, "pointwise_conv2d_u8_range": conv_range,
            "pointwise_conv2d_s8_range": conv_range,
            "residual_add_s8": [void_p, i32, void_p, i32, void_p, void_p, void_p],
            "latent_shift_u8": [void_p, i32, i32, void_p],
            "latent_shift_s8": [void_p, i32, i32, void_p],
            "latent_clip_u8": [void_p, i32, i32, void_p, void_p, i32, void_p],
            "latent_decode_fp32": [void_p, i32, i32, void_p, i32, void_p],
            "pack_bits": [void_p, i32, i32, void_p],
            "unpack_bits": [void_p, i32, i32, void_p],
            "conv2d_fp32_fw": [void_p, shape_p, void_p, void_p, void_p],
            "depthwise_fp32_fw": [void_p, shape_p, void_p, void_p, void_p],
            "pointwise_fp32_fw": [void_p, shape_p, void_p, void_p, void_p],
            "batch_norm_fp32_fw": [void_p, i32, i32, void_p, void_p, void_p],
            "relu_fp32_fw": [void_p, i32, void_p],
            "relu6_fp32_fw": [void_p, i32, void_p],
            "avgpool_fp32_fw": [void_p, shape_p, void_p],
            "linear_fp32_fw": [void_p, i32, void_p, void_p, i32, void_p],
            "argmax_fp32": [void_p, i32],
        }
        for name, argtypes in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes = argtypes
            function.restype = i32 if name in ("pack_bits", "argmax_fp32") else None

    # ---- INT8 frozen stage

    def rgb_u8_to_input_s8(self, rgb_hwc: np.ndarray, table: np.ndarray) -> np.ndarray:
        rgb, table = _array(rgb_hwc, np.uint8), _array(table, np.int8)
        height, width, channels = rgb.shape
        out = np.empty((channels, height, width), np.int8)
        self.lib.rgb_u8_to_input_s8(_ptr(rgb), height, width, channels, _ptr(table), _ptr(out))
        return out

    def requantize_u8(self, acc: np.ndarray, multiplier: np.ndarray, right_shift: np.ndarray) -> np.ndarray:
        acc = _array(acc, np.int32)
        out = np.empty(acc.shape, np.uint8)
        self.lib.requantize_u8(_ptr(acc), acc.shape[0], acc.shape[1], _ptr(_array(multiplier, np.int32)),
                               _ptr(_array(right_shift, np.int32)), _ptr(out))
        return out

    def _int_conv(self, name: str, x: np.ndarray, x_dtype, weight: np.ndarray, bias: np.ndarray,
                  multiplier: np.ndarray, right_shift: np.ndarray, stride: int, padding: int) -> np.ndarray:
        x, weight = _array(x, x_dtype), _array(weight, np.int8)
        shape = conv_shape(x.shape, weight.shape[0], weight.shape[2:], stride, padding)
        out = np.empty((shape.out_channels, shape.out_height, shape.out_width), np.uint8)
        getattr(self.lib, name)(_ptr(x), ctypes.byref(shape), _ptr(weight), _ptr(_array(bias, np.int32)),
                                _ptr(_array(multiplier, np.int32)), _ptr(_array(right_shift, np.int32)), _ptr(out))
        return out

    def conv2d_s8(self, x, weight, bias, multiplier, right_shift, stride: int, padding: int) -> np.ndarray:
        return self._int_conv("conv2d_s8", x, np.int8, weight, bias, multiplier, right_shift, stride, padding)

    def conv2d_u8(self, x, weight, bias, multiplier, right_shift, stride: int, padding: int) -> np.ndarray:
        return self._int_conv("conv2d_u8", x, np.uint8, weight, bias, multiplier, right_shift, stride, padding)

    def depthwise_conv2d_u8(self, x, weight, bias, multiplier, right_shift, stride: int, padding: int
                            ) -> np.ndarray:
        return self._int_conv("depthwise_conv2d_u8", x, np.uint8, weight, bias, multiplier, right_shift, stride,
                              padding)

    def pointwise_conv2d_u8(self, x, weight, bias, multiplier, right_shift, stride: int = 1) -> np.ndarray:
        return self._int_conv("pointwise_conv2d_u8", x, np.uint8, weight, bias, multiplier, right_shift, stride, 0)

    # ---- integer blocks (MobileNetV2, PhiNet)

    def _range_conv(self, name: str, x: np.ndarray, x_dtype, weight: np.ndarray, bias: np.ndarray,
                    multiplier: np.ndarray, right_shift: np.ndarray, stride: int, padding: int, lo: int,
                    hi: int) -> np.ndarray:
        x, weight = _array(x, x_dtype), _array(weight, np.int8)
        shape = conv_shape(x.shape, weight.shape[0], weight.shape[2:], stride, padding)
        out = np.empty((shape.out_channels, shape.out_height, shape.out_width), np.int8 if lo < 0 else np.uint8)
        getattr(self.lib, name)(_ptr(x), ctypes.byref(shape), _ptr(weight), _ptr(_array(bias, np.int32)),
                                _ptr(_array(multiplier, np.int32)), _ptr(_array(right_shift, np.int32)), lo, hi,
                                _ptr(out))
        return out

    def conv2d_s8_range(self, x, weight, bias, multiplier, right_shift, stride: int, padding: int, lo: int,
                        hi: int) -> np.ndarray:
        return self._range_conv("conv2d_s8_range", x, np.int8, weight, bias, multiplier, right_shift, stride,
                                padding, lo, hi)

    def depthwise_conv2d_u8_range(self, x, weight, bias, multiplier, right_shift, stride: int, padding: int,
                                  lo: int, hi: int) -> np.ndarray:
        return self._range_conv("depthwise_conv2d_u8_range", x, np.uint8, weight, bias, multiplier, right_shift,
                                stride, padding, lo, hi)

    def depthwise_conv2d_s8_range(self, x, weight, bias, multiplier, right_shift, stride: int, padding: int,
                                  lo: int, hi: int) -> np.ndarray:
        return self._range_conv("depthwise_conv2d_s8_range", x, np.int8, weight, bias, multiplier, right_shift,
                                stride, padding, lo, hi)

    def pointwise_conv2d_u8_range(self, x, weight, bias, multiplier, right_shift, stride: int, lo: int,
                                  hi: int) -> np.ndarray:
        return self._range_conv("pointwise_conv2d_u8_range", x, np.uint8, weight, bias, multiplier, right_shift,
                                stride, 0, lo, hi)

    def pointwise_conv2d_s8_range(self, x, weight, bias, multiplier, right_shift, stride: int, lo: int,
                                  hi: int) -> np.ndarray:
        return self._range_conv("pointwise_conv2d_s8_range", x, np.int8, weight, bias, multiplier, right_shift,
                                stride, 0, lo, hi)

    def residual_add_s8(self, a: np.ndarray, b: np.ndarray, add) -> np.ndarray:
        a_signed = np.asarray(a).dtype == np.int8  # else UINT8 codes (a ReLU6 output)
        a = _array(a, np.int8 if a_signed else np.uint8)
        b = _array(b, np.int8)
        out = np.empty(b.shape, np.int8)
        self.lib.residual_add_s8(_ptr(a), int(a_signed), _ptr(b), b.size,
                                 _ptr(_array([*add.multipliers, add.output_multiplier], np.int32)),
                                 _ptr(_array([*add.right_shifts, add.output_right_shift], np.int32)), _ptr(out))
        return out

    # ---- quantized latent replays

    def latent_shift_s8(self, latent: np.ndarray, bits: int) -> np.ndarray:
        latent = _array(latent, np.int8)
        out = np.empty(latent.shape, np.uint8)
        self.lib.latent_shift_s8(_ptr(latent), latent.size, bits, _ptr(out))
        return out

    def latent_shift_u8(self, latent: np.ndarray, bits: int) -> np.ndarray:
        latent = _array(latent, np.uint8)
        out = np.empty(latent.shape, np.uint8)
        self.lib.latent_shift_u8(_ptr(latent), latent.size, bits, _ptr(out))
        return out

    def latent_clip_u8(self, latent: np.ndarray, clip_u8: np.ndarray, bits: int) -> np.ndarray:
        latent = _array(latent, np.uint8)
        multiplier, right_shift = latent_clip_multipliers(clip_u8, bits)
        out = np.empty(latent.shape, np.uint8)
        self.lib.latent_clip_u8(_ptr(latent), latent.shape[0], latent.shape[1], _ptr(_array(multiplier, np.int32)),
                                _ptr(_array(right_shift, np.int32)), bits, _ptr(out))
        return out

    def latent_decode_fp32(self, codes: np.ndarray, step: np.ndarray, offset: int = 0) -> np.ndarray:
        codes = _array(codes, np.uint8)
        out = np.empty(codes.shape, np.float32)
        self.lib.latent_decode_fp32(_ptr(codes), codes.shape[0], codes.shape[1], _ptr(_array(step, np.float32)),
                                    offset, _ptr(out))
        return out

    def pack_bits(self, codes: np.ndarray, bits: int) -> np.ndarray:
        codes = _array(codes, np.uint8).ravel()
        out = np.full((codes.size * bits + 7) // 8, 0xA5, np.uint8)  # garbage: every byte must be written
        written = self.lib.pack_bits(_ptr(codes), codes.size, bits, _ptr(out))
        if written != out.size:
            raise AssertionError(f"pack_bits wrote {written} bytes, expected {out.size}")
        return out

    def unpack_bits(self, packed: np.ndarray, bits: int, count: int) -> np.ndarray:
        packed = _array(packed, np.uint8)
        out = np.empty(count, np.uint8)
        self.lib.unpack_bits(_ptr(packed), count, bits, _ptr(out))
        return out

    # ---- FP32 adaptive stage

    def _fp32_conv(self, name: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int,
                   padding: int) -> np.ndarray:
        x, weight = _array(x, np.float32), _array(weight, np.float32)
        shape = conv_shape(x.shape, weight.shape[0], weight.shape[2:], stride, padding)
        out = np.empty((shape.out_channels, shape.out_height, shape.out_width), np.float32)
        bias = None if bias is None else _array(bias, np.float32)
        getattr(self.lib, name)(_ptr(x), ctypes.byref(shape), _ptr(weight), _ptr(bias), _ptr(out))
        return out

    def conv2d_fp32_fw(self, x, weight, bias, stride: int, padding: int) -> np.ndarray:
        return self._fp32_conv("conv2d_fp32_fw", x, weight, bias, stride, padding)

    def depthwise_fp32_fw(self, x, weight, bias, stride: int, padding: int) -> np.ndarray:
        return self._fp32_conv("depthwise_fp32_fw", x, weight, bias, stride, padding)

    def pointwise_fp32_fw(self, x, weight, bias, stride: int = 1) -> np.ndarray:
        return self._fp32_conv("pointwise_fp32_fw", x, weight, bias, stride, 0)

    def batch_norm_fp32_fw(self, x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
        x = _array(x, np.float32)
        out = np.empty(x.shape, np.float32)
        self.lib.batch_norm_fp32_fw(_ptr(x), x.shape[0], x[0].size, _ptr(_array(scale, np.float32)),
                                    _ptr(_array(shift, np.float32)), _ptr(out))
        return out

    def relu_fp32_fw(self, x: np.ndarray) -> np.ndarray:
        x = _array(x, np.float32)
        out = np.empty(x.shape, np.float32)
        self.lib.relu_fp32_fw(_ptr(x), x.size, _ptr(out))
        return out

    def relu6_fp32_fw(self, x: np.ndarray) -> np.ndarray:
        x = _array(x, np.float32)
        out = np.empty(x.shape, np.float32)
        self.lib.relu6_fp32_fw(_ptr(x), x.size, _ptr(out))
        return out

    def avgpool_fp32_fw(self, x: np.ndarray, kernel_h: int, kernel_w: int, stride: int) -> np.ndarray:
        x = _array(x, np.float32)
        channels, height, width = x.shape
        shape = ConvShape(channels, height, width, channels, out_size(height, kernel_h, stride, 0),
                          out_size(width, kernel_w, stride, 0), kernel_h, kernel_w, stride, 0)
        out = np.empty((channels, shape.out_height, shape.out_width), np.float32)
        self.lib.avgpool_fp32_fw(_ptr(x), ctypes.byref(shape), _ptr(out))
        return out

    def linear_fp32_fw(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        x, weight = _array(x, np.float32), _array(weight, np.float32)
        out = np.empty(weight.shape[0], np.float32)
        bias = None if bias is None else _array(bias, np.float32)
        self.lib.linear_fp32_fw(_ptr(x), x.size, _ptr(weight), _ptr(bias), weight.shape[0], _ptr(out))
        return out

    def argmax_fp32(self, values: np.ndarray) -> int:
        values = _array(values, np.float32)
        return int(self.lib.argmax_fp32(_ptr(values), values.size))


def build_model_library(project_root: Path, compiler: str = "gcc") -> Path:
    """Compile an exported project's model (``tinycl_model.c``, its constants, the runtime and
    the region mark) for the host as ``build/host/libtinycl_model.so``, with the flags of
    every target plus ``-shared -fPIC``; returns its path."""
    root = Path(project_root)
    out = root / "build" / "host" / "libtinycl_model.so"
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = ["tinycl_model.c", "tinycl_model_data.c", *sorted(f"runtime/{p.name}" for p in
                                                                (root / "runtime").glob("*.c")),
               "harness/region_mark.c"]
    result = subprocess.run([compiler, *COMMON_CFLAGS, "-shared", "-fPIC", "-I.", "-Iruntime", "-Iharness",
                             *sources, "-o", str(out.relative_to(root))], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cannot build the model for the host:\n{result.stderr[-4000:]}")
    return out


class HostModel:
    """An exported model's generated functions on the host, through ctypes (one frame a call)."""

    def __init__(self, library: Path, input_shape: tuple[int, int, int], latent_values: int):
        self.lib = ctypes.CDLL(str(library))
        self.lib.tinycl_frozen_forward.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.lib.tinycl_frozen_forward.restype = None
        self.input_shape, self.latent_values = input_shape, latent_values

    def frozen_forward(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] camera frames -> the LR layer's uint8 outputs [N, D], frame by frame."""
        frames = _array(frames, np.uint8)
        out = np.empty((len(frames), self.latent_values), np.uint8)
        for i in range(len(frames)):
            self.lib.tinycl_frozen_forward(_ptr(frames[i]), _ptr(out[i]))
        return out
