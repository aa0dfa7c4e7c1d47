"""The runtime's training kernels and loop parts on the host, through ctypes, with the
signatures of their Python references in ``tinycl.export.reference_train`` (numpy in, numpy
out), so that tests hold each C function to its reference on random shapes. The library is
``host_kernels.build_host_library``'s (every runtime file, the flags of every target)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from tinycl.export.host_kernels import ConvShape, HostKernels, _array, _ptr, conv_shape, out_size
from tinycl.export.reference_train import BrnState, MemoryState
from tinycl.prng import Pcg32

POLICY_CODES = {"recipe": 0, "ar1": 1, "reservoir": 2, "class-balanced": 3}


class Brn(ctypes.Structure):
    """``tinycl_brn`` of tinycl_runtime.h."""

    _fields_ = [("channels", ctypes.c_int32), ("stats_std", ctypes.c_int32), ("eps", ctypes.c_float),
                *[(name, ctypes.c_double) for name in ("momentum", "r_max", "d_max", "max_r_max", "max_d_max",
                                                         "ramp_per_sample")],
                *[(name, ctypes.c_void_p) for name in ("gamma", "beta", "running_mean", "running_var", "batch_mean",
                                                         "batch_std", "r", "d")]]


class Pcg32State(ctypes.Structure):
    _fields_ = [("state", ctypes.c_uint64), ("inc", ctypes.c_uint64)]


class Plan(ctypes.Structure):
    _fields_ = [("new_per_batch", ctypes.c_int32), ("replays_per_batch", ctypes.c_int32),
                ("iterations", ctypes.c_int32)]


class ReplayMemory(ctypes.Structure):
    _fields_ = [*[(name, ctypes.c_int32) for name in ("capacity", "size", "row_bytes", "num_classes", "policy")],
                ("seen", ctypes.c_uint32),
                *[(name, ctypes.c_void_p) for name in ("rows", "labels", "seen_per_class", "class_counts")]]


class BrnBuffers:
    """A ``tinycl_brn`` and the arrays it points into (kept alive with it)."""

    def __init__(self, state: BrnState):
        channels = len(state.gamma)
        self.arrays = {name: _array(getattr(state, name), np.float32).copy()
                       for name in ("gamma", "beta", "running_mean", "running_var")}
        self.arrays.update({name: np.zeros(channels, np.float32) for name in ("batch_mean", "batch_std", "r", "d")})
        self.struct = Brn(channels, int(state.stats == "std"), state.eps, state.momentum, state.r_max, state.d_max,
                          state.max_r_max, state.max_d_max, state.ramp_per_sample,
                          *[_ptr(self.arrays[name]).value for name in ("gamma", "beta", "running_mean",
                                                                       "running_var", "batch_mean", "batch_std",
                                                                       "r", "d")])
        self.stats = state.stats

    def state(self) -> BrnState:
        s = self.struct
        return BrnState(self.arrays["gamma"], self.arrays["beta"], self.arrays["running_mean"].copy(),
                        self.arrays["running_var"].copy(), self.stats, s.eps, s.momentum, s.r_max, s.d_max,
                        s.max_r_max, s.max_d_max, s.ramp_per_sample)


class HostTrainKernels(HostKernels):
    """``HostKernels`` plus the training kernels, signatures of ``reference_train``."""

    def __init__(self, library: Path):
        super().__init__(library)
        void_p, i32, f32, f64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_float, ctypes.c_double
        shape_p, brn_p = ctypes.POINTER(ConvShape), ctypes.POINTER(Brn)
        rng_p, u64, u32 = ctypes.POINTER(Pcg32State), ctypes.c_uint64, ctypes.c_uint32
        wg = [void_p, shape_p, void_p, void_p, i32, void_p]
        ig = [void_p, shape_p, void_p, void_p]
        signatures = {
            "keep_channels_fp32": ([void_p, i32, void_p, i32, void_p], None),
            "conv2d_fp32_wg": (wg, None), "depthwise_fp32_wg": (wg, None), "pointwise_fp32_wg": (wg, None),
            "conv2d_fp32_ig": (ig, None), "depthwise_fp32_ig": (ig, None), "pointwise_fp32_ig": (ig, None),
            "linear_fp32_wg": ([void_p, i32, void_p, i32, void_p, i32, void_p], None),
            "linear_fp32_ig": ([void_p, i32, void_p, i32, void_p], None),
            "bias_fp32_wg": ([void_p, i32, i32, void_p], None),
            "avgpool_fp32_bw": ([void_p, shape_p, void_p], None),
            "relu_fp32_fw_train": ([void_p, i32, void_p, void_p], None),
            "relu6_fp32_fw_train": ([void_p, i32, void_p, void_p], None),
            "relu_fp32_bw": ([void_p, void_p, i32, void_p], None),
            "batch_renorm_fp32_fw_train": ([void_p, i32, i32, brn_p, void_p], None),
            "batch_renorm_fp32_wg": ([void_p, void_p, i32, i32, brn_p, void_p, void_p], None),
            "batch_renorm_fp32_ig": ([void_p, void_p, i32, i32, brn_p, void_p], None),
            "batch_renorm_fp32_fw_eval": ([void_p, i32, brn_p, void_p], None),
            "batch_renorm_set_phase": ([brn_p, f64], None),
            "cross_entropy_fp32": ([void_p, void_p, i32, i32, void_p], f32),
            "tinycl_expf": ([f32], f32), "tinycl_logf": ([f32], f32),
            "sgd_fp32": ([void_p, void_p, void_p, i32, f32, f32, f32], None),
            "sgd_fp32_channels": ([void_p, void_p, void_p, i32, i32, i32, void_p, i32, f32, f32, f32], None),
            "pcg32_seed": ([rng_p, u64, u64], None), "pcg32_next": ([rng_p], u32),
            "pcg32_bounded": ([rng_p, u32], u32), "pcg32_random": ([rng_p], f64),
            "pcg32_permutation": ([rng_p, i32, void_p], None),
            "pcg32_choice": ([rng_p, i32, i32, void_p, void_p], None),
            "sort_int32": ([void_p, i32], None),
            "minibatch_plan": ([i32, i32, i32], Plan), "padded_rows": ([i32, i32, void_p], i32),
            "replay_update": ([ctypes.POINTER(ReplayMemory), void_p, void_p, void_p, i32, i32, rng_p, void_p, void_p,
                               void_p], i32),
            "cwr_before_batch_fp32": ([void_p, void_p, void_p, i32, i32, void_p, i32], None),
            "cwr_after_batch_fp32": ([void_p, void_p, void_p, void_p, i32, i32, void_p, i32, void_p], None),
        }
        for name, (argtypes, restype) in signatures.items():
            function = getattr(self.lib, name)
            function.argtypes, function.restype = argtypes, restype

    # ---- convolution and linear: the reference's full input and chosen channels in; the
    # ---- forward's keep (keep_channels_fp32) happens here, as the generated step does it

    def keep_channels_fp32(self, x: np.ndarray, channels) -> np.ndarray:
        x = _array(x, np.float32)
        chosen = None if channels is None else _array(channels, np.int32)
        count = x.shape[0] if chosen is None else len(chosen)
        out = np.empty((count, *x.shape[1:]), np.float32)
        self.lib.keep_channels_fp32(_ptr(x), int(np.prod(x.shape[1:])), _ptr(chosen), count, _ptr(out))
        return out

    def _wg(self, name: str, x, grad_output, weight_shape, stride, padding, channels) -> np.ndarray:
        x, grad_output = _array(x, np.float32), _array(grad_output, np.float32)
        shape = conv_shape(x.shape, weight_shape[0], weight_shape[2:], stride, padding)
        kept = self.keep_channels_fp32(x, channels)
        chosen = None if channels is None else _array(channels, np.int32)
        grad = np.zeros(weight_shape, np.float32)
        getattr(self.lib, name)(_ptr(kept), ctypes.byref(shape), _ptr(grad_output), _ptr(chosen), len(kept),
                                _ptr(grad))
        return grad

    def _ig(self, name: str, grad_output, weight, in_shape, stride, padding) -> np.ndarray:
        grad_output, weight = _array(grad_output, np.float32), _array(weight, np.float32)
        shape = conv_shape(in_shape, weight.shape[0], weight.shape[2:], stride, padding)
        out = np.full(in_shape, np.nan, np.float32)  # garbage: every value must be written
        getattr(self.lib, name)(_ptr(grad_output), ctypes.byref(shape), _ptr(weight), _ptr(out))
        return out

    def conv2d_fp32_wg(self, x, grad_output, weight_shape, stride, padding, channels=None) -> np.ndarray:
        return self._wg("conv2d_fp32_wg", x, grad_output, weight_shape, stride, padding, channels)

    def conv2d_fp32_ig(self, grad_output, weight, in_shape, stride, padding) -> np.ndarray:
        return self._ig("conv2d_fp32_ig", grad_output, weight, in_shape, stride, padding)

    def depthwise_fp32_wg(self, x, grad_output, weight_shape, stride, padding, channels=None) -> np.ndarray:
        return self._wg("depthwise_fp32_wg", x, grad_output, weight_shape, stride, padding, channels)

    def depthwise_fp32_ig(self, grad_output, weight, in_shape, stride, padding) -> np.ndarray:
        return self._ig("depthwise_fp32_ig", grad_output, weight, in_shape, stride, padding)

    def pointwise_fp32_wg(self, x, grad_output, weight_shape, stride=1, channels=None) -> np.ndarray:
        return self._wg("pointwise_fp32_wg", x, grad_output, weight_shape, stride, 0, channels)

    def pointwise_fp32_ig(self, grad_output, weight, in_shape, stride=1) -> np.ndarray:
        return self._ig("pointwise_fp32_ig", grad_output, weight, in_shape, stride, 0)

    def linear_fp32_wg(self, x, grad_output, channels=None) -> np.ndarray:
        x, grad_output = _array(x, np.float32), _array(grad_output, np.float32)
        kept = self.keep_channels_fp32(x.reshape(-1, 1), channels).ravel()
        chosen = None if channels is None else _array(channels, np.int32)
        grad = np.zeros((grad_output.size, x.size), np.float32)
        self.lib.linear_fp32_wg(_ptr(kept), x.size, _ptr(grad_output), grad_output.size, _ptr(chosen), kept.size,
                                _ptr(grad))
        return grad

    def linear_fp32_ig(self, grad_output, weight) -> np.ndarray:
        grad_output, weight = _array(grad_output, np.float32), _array(weight, np.float32)
        out = np.full(weight.shape[1], np.nan, np.float32)
        self.lib.linear_fp32_ig(_ptr(grad_output), weight.shape[0], _ptr(weight), weight.shape[1], _ptr(out))
        return out

    def bias_fp32_wg(self, grad_output) -> np.ndarray:
        grad_output = _array(grad_output, np.float32)
        out = np.zeros(grad_output.shape[0], np.float32)
        self.lib.bias_fp32_wg(_ptr(grad_output), grad_output.shape[0], int(np.prod(grad_output.shape[1:])), _ptr(out))
        return out

    def avgpool_fp32_bw(self, grad_output, in_shape, kernel_h, kernel_w, stride) -> np.ndarray:
        grad_output = _array(grad_output, np.float32)
        channels, height, width = in_shape
        if kernel_h == 0:  # the global window
            kernel_h, kernel_w, stride = height, width, 1
        shape = ConvShape(channels, height, width, channels, out_size(height, kernel_h, stride, 0),
                          out_size(width, kernel_w, stride, 0), kernel_h, kernel_w, stride, 0)
        out = np.full(in_shape, np.nan, np.float32)
        self.lib.avgpool_fp32_bw(_ptr(grad_output), ctypes.byref(shape), _ptr(out))
        return out

    # ---- activations

    def _relu_train(self, name: str, x) -> tuple[np.ndarray, np.ndarray]:
        x = _array(x, np.float32)
        out = np.empty(x.shape, np.float32)
        mask = np.full((x.size + 7) // 8, 0xA5, np.uint8)  # garbage: every byte must be written
        getattr(self.lib, name)(_ptr(x), x.size, _ptr(out), _ptr(mask))
        return out, mask

    def relu_fp32_fw_train(self, x) -> tuple[np.ndarray, np.ndarray]:
        return self._relu_train("relu_fp32_fw_train", x)

    def relu6_fp32_fw_train(self, x) -> tuple[np.ndarray, np.ndarray]:
        return self._relu_train("relu6_fp32_fw_train", x)

    def relu_fp32_bw(self, grad_output, mask_bits) -> np.ndarray:
        grad_output = _array(grad_output, np.float32)
        out = np.empty(grad_output.shape, np.float32)
        self.lib.relu_fp32_bw(_ptr(grad_output), _ptr(_array(mask_bits, np.uint8)), grad_output.size, _ptr(out))
        return out

    # ---- batch renormalization

    def batch_renorm_fp32_fw_train(self, x, state: BrnState) -> tuple[np.ndarray, BrnState]:
        x = _array(x, np.float32)
        bn = BrnBuffers(state)
        out = np.empty(x.shape, np.float32)
        self.lib.batch_renorm_fp32_fw_train(_ptr(x), x.shape[0], int(np.prod(x.shape[2:])), ctypes.byref(bn.struct),
                                            _ptr(out))
        return out, bn.state()

    def _brn_after_forward(self, x, state: BrnState) -> BrnBuffers:
        """The kernel state after a training forward: the backward reads its batch statistics."""
        x = _array(x, np.float32)
        bn = BrnBuffers(state)
        scratch = np.empty(x.shape, np.float32)
        self.lib.batch_renorm_fp32_fw_train(_ptr(x), x.shape[0], int(np.prod(x.shape[2:])), ctypes.byref(bn.struct),
                                            _ptr(scratch))
        return bn

    def batch_renorm_fp32_wg(self, grad_output, x, state: BrnState) -> tuple[np.ndarray, np.ndarray]:
        x, grad_output = _array(x, np.float32), _array(grad_output, np.float32)
        bn = self._brn_after_forward(x, state)
        grad_gamma, grad_beta = np.zeros(x.shape[1], np.float32), np.zeros(x.shape[1], np.float32)
        self.lib.batch_renorm_fp32_wg(_ptr(grad_output), _ptr(x), x.shape[0], int(np.prod(x.shape[2:])),
                                      ctypes.byref(bn.struct), _ptr(grad_gamma), _ptr(grad_beta))
        return grad_gamma, grad_beta

    def batch_renorm_fp32_ig(self, grad_output, x, state: BrnState) -> np.ndarray:
        x, grad_output = _array(x, np.float32), _array(grad_output, np.float32)
        bn = self._brn_after_forward(x, state)
        out = np.full(x.shape, np.nan, np.float32)
        self.lib.batch_renorm_fp32_ig(_ptr(grad_output), _ptr(x), x.shape[0], int(np.prod(x.shape[2:])),
                                      ctypes.byref(bn.struct), _ptr(out))
        return out

    def batch_renorm_fp32_fw_eval(self, x, state: BrnState) -> np.ndarray:
        x = _array(x, np.float32)
        bn = BrnBuffers(state)
        out = np.empty(x.shape, np.float32)
        self.lib.batch_renorm_fp32_fw_eval(_ptr(x), int(np.prod(x.shape[1:])), ctypes.byref(bn.struct), _ptr(out))
        return out

    def batch_renorm_set_phase(self, state: BrnState, momentum: float) -> BrnState:
        bn = BrnBuffers(state)
        self.lib.batch_renorm_set_phase(ctypes.byref(bn.struct), momentum)
        return bn.state()

    # ---- loss, math, SGD

    def cross_entropy_fp32(self, logits, labels) -> tuple[float, np.ndarray]:
        logits = _array(logits, np.float32)
        grad = np.full(logits.shape, np.nan, np.float32)
        loss = self.lib.cross_entropy_fp32(_ptr(logits), _ptr(_array(labels, np.uint8)), logits.shape[0],
                                           logits.shape[1], _ptr(grad))
        return float(loss), grad

    def tinycl_expf(self, x) -> np.ndarray:
        return np.array([self.lib.tinycl_expf(float(v)) for v in np.asarray(x, np.float32).ravel()], np.float32)

    def tinycl_logf(self, x) -> np.ndarray:
        return np.array([self.lib.tinycl_logf(float(v)) for v in np.asarray(x, np.float32).ravel()], np.float32)

    def sgd_fp32(self, param, grad, momentum_buffer, lr, momentum, weight_decay):
        param, grad = _array(param, np.float32).copy(), _array(grad, np.float32)
        buf = np.zeros(param.shape, np.float32) if momentum_buffer is None else _array(momentum_buffer,
                                                                                       np.float32).copy()
        self.lib.sgd_fp32(_ptr(param), _ptr(grad), _ptr(buf), param.size, lr, momentum, weight_decay)
        return param, buf if momentum else None

    def sgd_fp32_channels(self, param, grad, momentum_buffer, axis, chosen, lr, momentum, weight_decay):
        param, grad = _array(param, np.float32).copy(), _array(grad, np.float32)
        buf = np.zeros(param.shape, np.float32) if momentum_buffer is None else _array(momentum_buffer,
                                                                                       np.float32).copy()
        outer = int(np.prod(param.shape[:axis]))
        inner = int(np.prod(param.shape[axis + 1 :]))
        chosen = _array(chosen, np.int32)
        self.lib.sgd_fp32_channels(_ptr(param), _ptr(grad), _ptr(buf), outer, param.shape[axis], inner, _ptr(chosen),
                                   len(chosen), lr, momentum, weight_decay)
        return param, buf if momentum else None

    # ---- the loop's integer parts

    def pcg32_draws(self, seed: int, stream: int, script: list[tuple[str, int, int]]) -> list:
        rng = Pcg32State()
        self.lib.pcg32_seed(ctypes.byref(rng), seed, stream)
        out: list = []
        for kind, n, k in script:
            if kind == "next":
                out.append(int(self.lib.pcg32_next(ctypes.byref(rng))))
            elif kind == "bounded":
                out.append(int(self.lib.pcg32_bounded(ctypes.byref(rng), n)))
            elif kind == "random":
                out.append(float(self.lib.pcg32_random(ctypes.byref(rng))))
            elif kind == "permutation":
                values = np.empty(n, np.int32)
                self.lib.pcg32_permutation(ctypes.byref(rng), n, _ptr(values))
                out.append(values.tolist())
            else:
                scratch, picked = np.empty(max(n, 1), np.int32), np.empty(max(k, 1), np.int32)
                self.lib.pcg32_choice(ctypes.byref(rng), n, k, _ptr(scratch), _ptr(picked))
                out.append(picked[:k].tolist())
        return out

    def sort_int32(self, values) -> np.ndarray:
        values = _array(values, np.int32).copy()
        self.lib.sort_int32(_ptr(values), len(values))
        return values

    def minibatch_plan(self, new_items: int, replay_items: int, minibatch: int) -> tuple[int, int, int]:
        plan = self.lib.minibatch_plan(new_items, replay_items, minibatch)
        return plan.new_per_batch, plan.replays_per_batch, plan.iterations

    def padded_rows(self, count: int, minibatch: int) -> np.ndarray:
        rows = np.empty(count + minibatch, np.int32)
        used = self.lib.padded_rows(count, minibatch, _ptr(rows))
        return rows[:used].astype(np.int64)

    def replay_update(self, state: MemoryState, policy: str, new_rows, new_labels, offered, batch_index: int,
                      rng: Pcg32) -> tuple[MemoryState, list[tuple[int, int]]]:
        """The C update on a copy of ``state``; ``rng`` (a Python Pcg32) is advanced to the C
        generator's state after it, so a test can continue both in lockstep."""
        rows, labels = state.rows.copy(), state.labels.copy()
        seen_per_class = state.seen_per_class.astype(np.int32)
        counts = np.zeros_like(seen_per_class)
        capacity, row_bytes = rows.shape
        memory = ReplayMemory(capacity, state.size, row_bytes, len(seen_per_class), POLICY_CODES[policy], state.seen,
                              _ptr(rows).value, _ptr(labels).value, _ptr(seen_per_class).value, _ptr(counts).value)
        c_rng = Pcg32State(rng.state, rng.inc)
        new_rows, new_labels = _array(new_rows, np.uint8), _array(new_labels, np.uint8)
        offered = _array(offered, np.int32)
        scratch = np.empty(max(len(offered), capacity, 1), np.int32)
        slots, items = np.empty(max(len(offered), 1), np.int32), np.empty(max(len(offered), 1), np.int32)
        writes = self.lib.replay_update(ctypes.byref(memory), _ptr(new_rows), _ptr(new_labels), _ptr(offered),
                                        len(offered), batch_index, ctypes.byref(c_rng), _ptr(scratch), _ptr(slots),
                                        _ptr(items))
        rng.state, rng.inc = int(c_rng.state), int(c_rng.inc)
        after = MemoryState(rows, labels, memory.size, int(memory.seen), seen_per_class.astype(np.int64))
        return after, list(zip(slots[:writes].tolist(), items[:writes].tolist(), strict=True))

    def cwr_before_batch_fp32(self, weight, consolidated, has_consolidated, current) -> np.ndarray:
        weight = _array(weight, np.float32).copy()
        current = _array(current, np.int32)
        self.lib.cwr_before_batch_fp32(_ptr(weight), _ptr(_array(consolidated, np.float32)),
                                       _ptr(_array(has_consolidated, np.uint8)), weight.shape[0], weight.shape[1],
                                       _ptr(current), len(current))
        return weight

    def cwr_after_batch_fp32(self, weight, consolidated, has_consolidated, past_counts, current, class_counts):
        weight = _array(weight, np.float32).copy()
        consolidated = _array(consolidated, np.float32).copy()
        has = _array(has_consolidated, np.uint8).copy()
        past = _array(past_counts, np.float32).copy()
        current = _array(current, np.int32)
        self.lib.cwr_after_batch_fp32(_ptr(weight), _ptr(consolidated), _ptr(has), _ptr(past), weight.shape[0],
                                      weight.shape[1], _ptr(current), len(current),
                                      _ptr(_array(class_counts, np.int32)))
        return weight, consolidated, has, past


__all__ = ["HostTrainKernels", "conv_shape"]


def build_train_library(project_root: Path, compiler: str = "gcc") -> Path:
    """Compile an exported ``--train`` project's model and training step (no main) for the host
    as ``build/host/libtinycl_train.so``, with the flags of every target plus ``-shared -fPIC``."""
    import subprocess

    from tinycl.export.toolchains import COMMON_CFLAGS

    root = Path(project_root)
    out = root / "build" / "host" / "libtinycl_train.so"
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = ["tinycl_model.c", "tinycl_model_data.c", "tinycl_train.c", "tinycl_train_data.c",
               *sorted(f"runtime/{p.name}" for p in (root / "runtime").glob("*.c")), "harness/region_mark.c",
               "harness/platform_host.c"]
    result = subprocess.run([compiler, *COMMON_CFLAGS, "-shared", "-fPIC", "-I.", "-Iruntime", "-Iharness", *sources,
                             "-o", str(out.relative_to(root))], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cannot build the training step for the host:\n{result.stderr[-4000:]}")
    return out


class HostTrainStep:
    """``tinycl_train_step`` of an exported project on the host: one call trains one mini-batch
    of Q-bit codes (uint8 [batch, D]) in place of the project's parameters; returns the loss."""

    def __init__(self, library: Path, seed: int = 0):
        self.lib = ctypes.CDLL(str(library))
        self.lib.tinycl_train_step.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_float,
                                               ctypes.POINTER(Pcg32State)]
        self.lib.tinycl_train_step.restype = ctypes.c_float
        self.lib.pcg32_seed.argtypes = [ctypes.POINTER(Pcg32State), ctypes.c_uint64, ctypes.c_uint64]
        self.rng = Pcg32State()
        self.lib.pcg32_seed(ctypes.byref(self.rng), seed, 2)  # tinycl.prng.SPARSE_STREAM

    def step(self, codes: np.ndarray, labels: np.ndarray, lr: float) -> float:
        codes, labels = _array(codes, np.uint8), _array(labels, np.uint8)
        return float(self.lib.tinycl_train_step(_ptr(codes), _ptr(labels), len(labels), lr, ctypes.byref(self.rng)))
