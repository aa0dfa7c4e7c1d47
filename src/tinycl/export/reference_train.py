"""Python references of the C runtime's training kernels and loop parts: one function per C
function, of the same name (``runtime/tinycl_runtime.h``, "FP32 training" and "the
continual-learning loop's integer parts").

Each computes what tinycl's Python learner computes, by running the learner's own code:
gradients come from PyTorch autograd through ``torch.nn.functional`` (and, for the
channel-sparse cases, through ``tinycl.train.sparse``'s kernels), batch renormalization from
``BatchRenorm2d``, ReLU masks from ``MaskedReLUFn``, SGD from ``torch.optim.SGD`` /
``ChannelSGD``, the draws from ``tinycl.prng.Pcg32``, the memory update from
``LatentReplayMemory``, CWR* from ``CWRStar``. Arrays are numpy, in the C layout: one sample in
CHW for the per-sample kernels, ``[batch, C, H, W]`` for the batch-level ones.

FP32 results agree with the C kernels within float rounding (PyTorch sums in other orders and
fuses multiply-adds on AVX2); integer results (draws, slots, plans) are identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tinycl.prng import Pcg32


def _tensor(array, grad: bool = False) -> torch.Tensor:
    t = torch.as_tensor(np.array(array, dtype=np.float32))
    return t.requires_grad_(grad)


def _channels(channels) -> torch.Tensor | None:
    return None if channels is None else torch.as_tensor(np.asarray(channels, np.int64))


def _mask_bits(mask: torch.Tensor) -> np.ndarray:
    """A boolean tensor as the runtime's 1-bit mask: bit i of byte i / 8, LSB first."""
    return np.packbits(mask.numpy().ravel().astype(np.uint8), bitorder="little")


def _unpack_mask(bits: np.ndarray, count: int) -> np.ndarray:
    return np.unpackbits(np.asarray(bits, np.uint8), count=count, bitorder="little").astype(bool)


# ---------------------------------------------------------------- convolution and linear


def keep_channels_fp32(x: np.ndarray, channels) -> np.ndarray:
    """The chosen channels of one sample's input, as ``SparseConv2dFn`` saves them."""
    x = np.asarray(x, np.float32)
    return x if channels is None else x[np.asarray(channels, np.int64)]


def _conv_weight_grad(x, grad_output, weight_shape, stride, padding, groups, channels) -> np.ndarray:
    """Autograd of ``tinycl.train.sparse.sparse_conv2d`` (dense when ``channels`` is None) for
    the weight: exactly the gradient the learner's sparse layers produce."""
    from tinycl.train.sparse import sparse_conv2d

    weight = torch.zeros(weight_shape, requires_grad=True)
    out = sparse_conv2d(_tensor(x)[None], weight, None, _channels(channels), "in", stride, padding, 1, groups)
    out.backward(_tensor(grad_output)[None])
    return weight.grad.numpy() if weight.grad is not None else np.zeros(weight_shape, np.float32)


def _conv_input_grad(grad_output, weight, in_shape, stride, padding, groups) -> np.ndarray:
    x = torch.zeros((1, *in_shape), requires_grad=True)
    out = F.conv2d(x, _tensor(weight), None, stride, padding, 1, groups)
    out.backward(_tensor(grad_output)[None])
    return x.grad[0].numpy()


def conv2d_fp32_wg(x: np.ndarray, grad_output: np.ndarray, weight_shape: tuple[int, ...], stride: int,
                   padding: int, channels=None) -> np.ndarray:
    """Weight gradient ``[C_out, C_in, kh, kw]`` of one sample (columns outside ``channels`` 0)."""
    return _conv_weight_grad(x, grad_output, weight_shape, stride, padding, 1, channels)


def conv2d_fp32_ig(grad_output: np.ndarray, weight: np.ndarray, in_shape: tuple[int, int, int], stride: int,
                   padding: int) -> np.ndarray:
    return _conv_input_grad(grad_output, weight, in_shape, stride, padding, 1)


def depthwise_fp32_wg(x: np.ndarray, grad_output: np.ndarray, weight_shape: tuple[int, ...], stride: int,
                      padding: int, channels=None) -> np.ndarray:
    """Weight gradient ``[C, 1, kh, kw]`` of one sample (rows outside ``channels`` 0)."""
    return _conv_weight_grad(x, grad_output, weight_shape, stride, padding, weight_shape[0], channels)


def depthwise_fp32_ig(grad_output: np.ndarray, weight: np.ndarray, in_shape: tuple[int, int, int], stride: int,
                      padding: int) -> np.ndarray:
    return _conv_input_grad(grad_output, weight, in_shape, stride, padding, in_shape[0])


def pointwise_fp32_wg(x: np.ndarray, grad_output: np.ndarray, weight_shape: tuple[int, ...], stride: int = 1,
                      channels=None) -> np.ndarray:
    return _conv_weight_grad(x, grad_output, weight_shape, stride, 0, 1, channels)


def pointwise_fp32_ig(grad_output: np.ndarray, weight: np.ndarray, in_shape: tuple[int, int, int],
                      stride: int = 1) -> np.ndarray:
    return _conv_input_grad(grad_output, weight, in_shape, stride, 0, 1)


def linear_fp32_wg(x: np.ndarray, grad_output: np.ndarray, channels=None) -> np.ndarray:
    """``[out, in]`` weight gradient of one sample by ``SparseLinearFn``'s autograd."""
    from tinycl.train.sparse import sparse_linear

    grad_output = np.asarray(grad_output, np.float32)
    weight = torch.zeros((grad_output.size, np.asarray(x).size), requires_grad=True)
    sparse_linear(_tensor(x)[None], weight, None, _channels(channels), "in").backward(_tensor(grad_output)[None])
    return weight.grad.numpy() if weight.grad is not None else np.zeros(tuple(weight.shape), np.float32)


def linear_fp32_ig(grad_output: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = torch.zeros((1, np.asarray(weight).shape[1]), requires_grad=True)
    F.linear(x, _tensor(weight)).backward(_tensor(grad_output)[None])
    return x.grad[0].numpy()


def bias_fp32_wg(grad_output: np.ndarray) -> np.ndarray:
    """Bias gradient ``[C]`` of one sample's ``[C, H, W]`` output gradient (autograd of a conv bias)."""
    grad_output = np.asarray(grad_output, np.float32)
    bias = torch.zeros(grad_output.shape[0], requires_grad=True)
    (torch.zeros((1, *grad_output.shape)) + bias.view(1, -1, 1, 1)).backward(_tensor(grad_output)[None])
    return bias.grad.numpy()


def avgpool_fp32_bw(grad_output: np.ndarray, in_shape: tuple[int, int, int], kernel_h: int, kernel_w: int,
                    stride: int) -> np.ndarray:
    """Autograd of ``F.avg_pool2d``; ``kernel_h == 0``: the global pool ``nn.AdaptiveAvgPool2d(1)``."""
    x = torch.zeros((1, *in_shape), requires_grad=True)
    out = F.adaptive_avg_pool2d(x, 1) if kernel_h == 0 else F.avg_pool2d(x, (kernel_h, kernel_w), stride)
    out.backward(_tensor(grad_output)[None])
    return x.grad[0].numpy()


# ---------------------------------------------------------------- activations with 1-bit masks


def relu_fp32_fw_train(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, 1-bit mask) of ``MaskedReLUFn`` (ReLU)."""
    return _masked_relu(x, None)


def relu6_fp32_fw_train(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, 1-bit mask) of ``MaskedReLUFn`` with upper 6 (ReLU6)."""
    return _masked_relu(x, 6.0)


def _masked_relu(x: np.ndarray, upper: float | None) -> tuple[np.ndarray, np.ndarray]:
    from tinycl.train.sparse import MaskedReLUFn

    saved: list[torch.Tensor] = []
    t = _tensor(x, grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda s: saved.append(s) or s, lambda s: s):
        out = MaskedReLUFn.apply(t, upper)
    (mask,) = saved
    return out.detach().numpy(), _mask_bits(mask)


def relu_fp32_bw(grad_output: np.ndarray, mask_bits: np.ndarray) -> np.ndarray:
    """``MaskedReLUFn.backward``: the gradient where the mask is set (ReLU and ReLU6 alike)."""
    from tinycl.train.sparse import MaskedReLUFn

    grad_output = np.asarray(grad_output, np.float32)
    mask = torch.from_numpy(_unpack_mask(mask_bits, grad_output.size).reshape(grad_output.shape))

    class Ctx:
        saved_tensors = (mask,)

    grad, _ = MaskedReLUFn.backward(Ctx(), _tensor(grad_output))
    return grad.numpy()


# ---------------------------------------------------------------- batch renormalization


@dataclass
class BrnState:
    """What ``tinycl_brn`` holds: a ``BatchRenorm2d``'s parameters, buffers and settings."""

    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray  # the running std when stats == "std"
    stats: str = "var"
    eps: float = 1e-5
    momentum: float = 0.01
    r_max: float = 1.25
    d_max: float = 0.5
    max_r_max: float = 1.25
    max_d_max: float = 0.5
    ramp_per_sample: float = 0.0

    def module(self):
        """The learner's ``BatchRenorm2d`` in this state (train mode)."""
        from tinycl.train.batch_renorm import BatchRenorm2d

        bn = BatchRenorm2d(len(self.gamma), eps=self.eps, momentum=self.momentum, r_max=self.max_r_max,
                           d_max=self.max_d_max, ramp_per_sample=self.ramp_per_sample, stats=self.stats)
        with torch.no_grad():
            bn.weight.copy_(_tensor(self.gamma))
            bn.bias.copy_(_tensor(self.beta))
            bn.running_mean.copy_(_tensor(self.running_mean))
            (bn.running_std if self.stats == "std" else bn.running_var).copy_(_tensor(self.running_var))
            bn.r_max.fill_(self.r_max)
            bn.d_max.fill_(self.d_max)
        return bn.train()


def batch_renorm_fp32_fw_train(x: np.ndarray, state: BrnState) -> tuple[np.ndarray, BrnState]:
    """``BatchRenorm2d.forward`` in train mode on ``x [B, C, H, W]``: (output, state after it:
    running statistics updated, r_max / d_max ramped)."""
    bn = state.module()
    with torch.no_grad():
        out = bn(_tensor(x)).numpy()
    running = bn.running_std if state.stats == "std" else bn.running_var
    after = BrnState(state.gamma, state.beta, bn.running_mean.numpy().copy(), running.numpy().copy(), state.stats,
                     state.eps, state.momentum, float(bn.r_max), float(bn.d_max), state.max_r_max, state.max_d_max,
                     state.ramp_per_sample)
    return out, after


def _brn_backward(x: np.ndarray, grad_output: np.ndarray, state: BrnState):
    bn = state.module()
    t = _tensor(x, grad=True)
    bn(t).backward(_tensor(grad_output))
    return bn.weight.grad.numpy(), bn.bias.grad.numpy(), t.grad.numpy()


def batch_renorm_fp32_wg(grad_output: np.ndarray, x: np.ndarray, state: BrnState) -> tuple[np.ndarray, np.ndarray]:
    """(grad gamma, grad beta) by autograd through ``BatchRenorm2d``'s train-mode forward from
    ``state`` (the state *before* the forward, as the C kernel's statistics come from it)."""
    grad_gamma, grad_beta, _ = _brn_backward(x, grad_output, state)
    return grad_gamma, grad_beta


def batch_renorm_fp32_ig(grad_output: np.ndarray, x: np.ndarray, state: BrnState) -> np.ndarray:
    """Input gradient ``[B, C, H, W]`` by autograd through ``BatchRenorm2d`` (r, d constant)."""
    return _brn_backward(x, grad_output, state)[2]


def batch_renorm_fp32_fw_eval(x: np.ndarray, state: BrnState) -> np.ndarray:
    """``BatchRenorm2d.forward`` in eval mode on one sample ``[C, H, W]``."""
    bn = state.module().eval()
    with torch.no_grad():
        return bn(_tensor(x)[None])[0].numpy()


def batch_renorm_set_phase(state: BrnState, momentum: float) -> BrnState:
    """``BatchRenorm2d.set_phase``: caps reached, no ramp, a new momentum."""
    bn = state.module()
    bn.set_phase(momentum)
    return BrnState(state.gamma, state.beta, state.running_mean, state.running_var, state.stats, state.eps,
                    bn.momentum, float(bn.r_max), float(bn.d_max), state.max_r_max, state.max_d_max,
                    bn.ramp_per_sample)


# ---------------------------------------------------------------- loss, math, SGD


def cross_entropy_fp32(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """(mean loss, gradient w.r.t. the logits ``[B, K]``): ``nn.CrossEntropyLoss`` and autograd."""
    t = _tensor(logits, grad=True)
    loss = torch.nn.CrossEntropyLoss()(t, torch.as_tensor(np.asarray(labels, np.int64)))
    loss.backward()
    return float(loss.detach()), t.grad.numpy()


def tinycl_expf(x: np.ndarray) -> np.ndarray:
    """exp in float64, rounded to float32 (the exactly rounded value, within half an ulp)."""
    return np.exp(np.asarray(x, np.float32).astype(np.float64)).astype(np.float32)


def tinycl_logf(x: np.ndarray) -> np.ndarray:
    return np.log(np.asarray(x, np.float32).astype(np.float64)).astype(np.float32)


def sgd_fp32(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None, lr: float, momentum: float,
             weight_decay: float) -> tuple[np.ndarray, np.ndarray | None]:
    """One ``torch.optim.SGD.step`` on a tensor: (param, momentum buffer) after it. A buffer of
    None is the optimizer's first step (torch then starts the buffer at the step's d_p)."""
    p = torch.nn.Parameter(_tensor(param))
    p.grad = _tensor(grad)
    optimizer = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay)
    if momentum_buffer is not None and momentum:
        optimizer.state[p]["momentum_buffer"] = _tensor(momentum_buffer)
    optimizer.step()
    buf = optimizer.state[p].get("momentum_buffer")
    return p.detach().numpy(), None if buf is None else buf.numpy()


def sgd_fp32_channels(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None, axis: int,
                      chosen, lr: float, momentum: float, weight_decay: float
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """One ``tinycl.train.optim.ChannelSGD.step`` updating ``chosen`` channels along ``axis``."""
    from tinycl.train.optim import ChannelSGD

    p = torch.nn.Parameter(_tensor(param))
    p.grad = _tensor(grad)
    channels = _channels(chosen)
    optimizer = ChannelSGD([p], lr=lr, momentum=momentum, weight_decay=weight_decay,
                           channel_queries={p: lambda: (axis, channels)})
    if momentum_buffer is not None and momentum:
        optimizer.state[p]["momentum_buffer"] = _tensor(momentum_buffer)
    optimizer.step()
    buf = optimizer.state[p].get("momentum_buffer")
    return p.detach().numpy(), None if buf is None else buf.numpy()


# ---------------------------------------------------------------- the loop's integer parts


def pcg32_draws(seed: int, stream: int, script: list[tuple[str, int, int]]) -> list:
    """Run a script of draws on ``Pcg32(seed, stream)``: ("next", 0, 0), ("bounded", n, 0),
    ("random", 0, 0), ("permutation", n, 0), ("choice", n, k); one result per entry."""
    rng = Pcg32(seed, stream)
    out: list = []
    for kind, n, k in script:
        if kind == "next":
            out.append(rng.next_u32())
        elif kind == "bounded":
            out.append(rng.bounded(n))
        elif kind == "random":
            out.append(rng.random())
        elif kind == "permutation":
            out.append(rng.permutation(n).tolist())
        else:
            out.append(rng.choice(n, k).tolist())
    return out


def minibatch_plan(new_items: int, replay_items: int, minibatch: int) -> tuple[int, int, int]:
    from tinycl.train.learner import minibatch_plan as plan

    return plan(new_items, replay_items, minibatch)


def padded_rows(count: int, minibatch: int) -> np.ndarray:
    from tinycl.train.learner import padded_rows as rows

    return rows(count, minibatch)


@dataclass
class MemoryState:
    """A replay memory's contents: packed rows, labels, fill and the counters of its policies."""

    rows: np.ndarray  # uint8 [N, row_bytes]
    labels: np.ndarray  # uint8 [N]
    size: int
    seen: int
    seen_per_class: np.ndarray  # int64 [classes]


def replay_update(state: MemoryState, policy: str, new_rows: np.ndarray, new_labels: np.ndarray,
                  offered: np.ndarray, batch_index: int, rng: Pcg32) -> tuple[MemoryState, list[tuple[int, int]]]:
    """``LatentReplayMemory.update`` with the offered rows: (the memory after, its writes as
    (slot, offered index) in the order made). ``rng`` is advanced as the learner's is."""
    from tinycl.replay.codecs import RawImageCodec
    from tinycl.replay.memory import LatentReplayMemory

    capacity, row_bytes = state.rows.shape
    memory = LatentReplayMemory(capacity, RawImageCodec(row_bytes), len(state.seen_per_class), policy)
    memory.load_state_dict({"rows": torch.from_numpy(state.rows.copy()), "labels": torch.from_numpy(
        state.labels.copy()), "size": state.size, "seen": state.seen,
        "seen_per_class": torch.from_numpy(state.seen_per_class.astype(np.int64))})
    offered = np.asarray(offered, np.int64)
    items = torch.from_numpy(np.asarray(new_rows, np.uint8)[offered])
    writes: list[tuple[int, int]] = []
    write = memory._write
    chosen: list[np.ndarray] = []
    choice = rng.choice

    def recording_choice(n: int, k: int) -> np.ndarray:
        picked = choice(n, k)
        chosen.append(picked)
        return picked

    def recording_write(slots, rows, labels) -> None:
        slots = np.asarray(slots, np.int64).tolist()
        if policy in ("recipe", "ar1"):  # rows[chosen] at once: the first choice lists the items
            picked = chosen[0].tolist()
        else:  # one item at a time, rows[k : k + 1], a view of the encoded items
            picked = [rows.storage_offset() // row_bytes]
        writes.extend(zip(slots, picked, strict=True))
        write(slots, rows, labels)

    memory._write = recording_write  # type: ignore[method-assign]
    rng.choice = recording_choice  # type: ignore[method-assign]
    try:
        memory.update(items, torch.from_numpy(np.asarray(new_labels, np.uint8)[offered]), batch_index, rng)
    finally:
        del rng.choice
    after = MemoryState(memory.rows.numpy().copy(), memory.labels.numpy().copy(), memory.size, memory.seen,
                        memory.seen_per_class.copy())
    return after, writes


def cwr_before_batch_fp32(weight: np.ndarray, consolidated: np.ndarray, has_consolidated: np.ndarray,
                          current: np.ndarray) -> np.ndarray:
    """``CWRStar.before_batch``: the head after it."""
    cwr = _cwr(weight, consolidated, has_consolidated, np.zeros(len(weight), np.float32))
    cwr.before_batch(torch.as_tensor(np.asarray(current, np.int64)))
    return cwr.weight.numpy()


def cwr_after_batch_fp32(weight: np.ndarray, consolidated: np.ndarray, has_consolidated: np.ndarray,
                         past_counts: np.ndarray, current: np.ndarray, class_counts: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``CWRStar.after_batch``: (head, consolidated, has_consolidated, past_counts) after it."""
    cwr = _cwr(weight, consolidated, has_consolidated, past_counts)
    cwr.after_batch(torch.as_tensor(np.asarray(current, np.int64)), torch.as_tensor(np.asarray(class_counts,
                                                                                               np.int64)))
    return (cwr.weight.numpy(), cwr.consolidated.numpy(), cwr.has_consolidated.numpy().astype(np.uint8),
            cwr.past_counts.numpy())


def _cwr(weight, consolidated, has_consolidated, past_counts):
    from tinycl.train.cwr import CWRStar

    cwr = CWRStar(_tensor(weight))
    cwr.consolidated.copy_(_tensor(consolidated))
    cwr.has_consolidated.copy_(torch.as_tensor(np.asarray(has_consolidated, bool)))
    cwr.past_counts.copy_(_tensor(past_counts))
    return cwr
