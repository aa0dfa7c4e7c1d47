"""Each training kernel of the C runtime against its Python reference (tinycl.export.reference_train:
PyTorch autograd and the learner's own modules) on random shapes, compiled for the host.
FP32 results within 1e-5 relative error (largest difference over the largest reference
magnitude); draws, plans and memory writes identical. Includes the two cases PULP-TrainLib gets
wrong (REFERENCES.md): a pointwise input gradient with C_in != C_out and depthwise gradients
with padding. ~15 s on two busy cores."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinycl.export import reference_train as ref
from tinycl.export.reference_train import BrnState, MemoryState
from tinycl.prng import Pcg32

EXAMPLES = settings(max_examples=25, deadline=None)
RTOL = 1e-5  # issue 17: relative error <= 1e-5 against PyTorch autograd


@pytest.fixture(scope="module")
def train_kernels(tmp_path_factory, require_toolchain):
    from tinycl.export.host_kernels import build_host_library
    from tinycl.export.host_train_kernels import HostTrainKernels

    require_toolchain("host")
    return HostTrainKernels(build_host_library(tmp_path_factory.mktemp("train_runtime")))


def relative_error(got, want, scale: float = 0.0) -> float:
    """Largest difference over the largest reference magnitude (or over ``scale``, where the
    result is a cancellation of larger terms and its own size says nothing of rounding)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max(initial=0.0)), scale, 1e-30)
    return float(np.abs(got - want).max(initial=0.0)) / scale


def assert_close(got, want, rtol=RTOL, scale: float = 0.0):
    assert relative_error(got, want, scale) <= rtol, relative_error(got, want, scale)


@st.composite
def conv_case(draw, kind: str):
    """(input [C, H, W], weight shape, stride, padding, chosen input channels or None)."""
    in_c = draw(st.integers(1, 6))
    out_c = in_c if kind == "dw" else draw(st.integers(1, 6))
    kh, kw = (1, 1) if kind == "pw" else (draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 3])))
    padding = 0 if kind == "pw" else draw(st.integers(0, 2))
    height = draw(st.integers(max(1, kh - 2 * padding), 8))
    width = draw(st.integers(max(1, kw - 2 * padding), 8))
    stride = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(0, 1, (in_c, height, width)).astype(np.float32)
    weight_shape = (out_c, 1 if kind == "dw" else in_c, kh, kw)
    sparse = draw(st.booleans())
    channels = np.sort(rng.choice(in_c, draw(st.integers(1, in_c)), replace=False)) if sparse else None
    return x, weight_shape, stride, padding, channels, rng


def out_shape(x, weight_shape, stride, padding):
    _, height, width = x.shape
    return (weight_shape[0], (height + 2 * padding - weight_shape[2]) // stride + 1,
            (width + 2 * padding - weight_shape[3]) // stride + 1)


@pytest.mark.parametrize("kind", ["conv", "dw", "pw"])
@EXAMPLES
@given(data=st.data())
def test_conv_weight_and_input_gradients(train_kernels, kind, data):
    x, weight_shape, stride, padding, channels, rng = data.draw(conv_case(kind))
    grad_output = rng.normal(0, 1, out_shape(x, weight_shape, stride, padding)).astype(np.float32)
    weight = rng.normal(0, 1, weight_shape).astype(np.float32)
    name = {"conv": "conv2d", "dw": "depthwise", "pw": "pointwise"}[kind]
    extra = () if kind == "pw" else (padding,)
    want = getattr(ref, f"{name}_fp32_wg")(x, grad_output, weight_shape, stride, *extra, channels=channels)
    got = getattr(train_kernels, f"{name}_fp32_wg")(x, grad_output, weight_shape, stride, *extra, channels=channels)
    assert_close(got, want)
    if channels is not None:  # the other channels' gradient is exactly zero, never computed
        others = np.setdiff1d(np.arange(x.shape[0]), channels)
        assert not (got[others] if kind == "dw" else got[:, others]).any()
    want = getattr(ref, f"{name}_fp32_ig")(grad_output, weight, x.shape, stride, *extra)
    assert_close(getattr(train_kernels, f"{name}_fp32_ig")(grad_output, weight, x.shape, stride, *extra), want)


@pytest.mark.parametrize("in_c, out_c, stride", [(3, 7, 1), (8, 2, 1), (5, 3, 2)])
def test_pointwise_input_gradient_with_different_channel_counts(train_kernels, in_c, out_c, stride):
    """PULP-TrainLib's channel-first pointwise input gradient is wrong when C_in != C_out."""
    rng = np.random.default_rng(in_c * 10 + out_c)
    weight = rng.normal(0, 1, (out_c, in_c, 1, 1)).astype(np.float32)
    in_shape = (in_c, 5, 6)
    grad_output = rng.normal(0, 1, (out_c, (5 - 1) // stride + 1, (6 - 1) // stride + 1)).astype(np.float32)
    want = ref.pointwise_fp32_ig(grad_output, weight, in_shape, stride)
    assert_close(train_kernels.pointwise_fp32_ig(grad_output, weight, in_shape, stride), want)


@pytest.mark.parametrize("padding, stride", [(1, 1), (1, 2), (2, 1), (2, 3)])
def test_depthwise_gradients_with_padding(train_kernels, padding, stride):
    """PULP-TrainLib's depthwise gradients do not support padding: here both are exact."""
    rng = np.random.default_rng(padding * 7 + stride)
    x = rng.normal(0, 1, (4, 7, 6)).astype(np.float32)
    weight = rng.normal(0, 1, (4, 1, 3, 3)).astype(np.float32)
    grad_output = rng.normal(0, 1, out_shape(x, weight.shape, stride, padding)).astype(np.float32)
    assert_close(train_kernels.depthwise_fp32_wg(x, grad_output, weight.shape, stride, padding),
                 ref.depthwise_fp32_wg(x, grad_output, weight.shape, stride, padding))
    assert_close(train_kernels.depthwise_fp32_ig(grad_output, weight, x.shape, stride, padding),
                 ref.depthwise_fp32_ig(grad_output, weight, x.shape, stride, padding))


@EXAMPLES
@given(in_features=st.integers(1, 40), out_features=st.integers(1, 12), sparse=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_linear_and_bias_gradients(train_kernels, in_features, out_features, sparse, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, in_features).astype(np.float32)
    grad_output = rng.normal(0, 1, out_features).astype(np.float32)
    weight = rng.normal(0, 1, (out_features, in_features)).astype(np.float32)
    channels = np.sort(rng.choice(in_features, rng.integers(1, in_features + 1), replace=False)) if sparse else None
    assert_close(train_kernels.linear_fp32_wg(x, grad_output, channels), ref.linear_fp32_wg(x, grad_output, channels))
    assert_close(train_kernels.linear_fp32_ig(grad_output, weight), ref.linear_fp32_ig(grad_output, weight))
    plane = rng.normal(0, 1, (out_features, 3, 2)).astype(np.float32)
    assert_close(train_kernels.bias_fp32_wg(plane), ref.bias_fp32_wg(plane))


@EXAMPLES
@given(channels=st.integers(1, 5), height=st.integers(1, 7), width=st.integers(1, 7), window=st.integers(0, 3),
       stride=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_avgpool_backward(train_kernels, channels, height, width, window, stride, seed):
    kernel_h, kernel_w = (0, 0) if window == 0 else (min(window, height), min(window + 1, width))
    out_h = 1 if window == 0 else (height - kernel_h) // stride + 1
    out_w = 1 if window == 0 else (width - kernel_w) // stride + 1
    grad_output = np.random.default_rng(seed).normal(0, 1, (channels, out_h, out_w)).astype(np.float32)
    shape = (channels, height, width)
    assert_close(train_kernels.avgpool_fp32_bw(grad_output, shape, kernel_h, kernel_w, stride),
                 ref.avgpool_fp32_bw(grad_output, shape, kernel_h, kernel_w, stride))


@EXAMPLES
@given(count=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_relu_masks_are_one_bit_and_exact(train_kernels, count, seed):
    rng = np.random.default_rng(seed)
    x = (rng.normal(0, 4, count) * (rng.random(count) < 0.9)).astype(np.float32)  # zeros too
    x[: min(3, count)] = [6.0, 0.0, -0.0][: min(3, count)]
    grad = rng.normal(0, 1, count).astype(np.float32)
    for name in ("relu_fp32_fw_train", "relu6_fp32_fw_train"):
        out, mask = getattr(train_kernels, name)(x)
        want_out, want_mask = getattr(ref, name)(x)
        assert np.array_equal(out, want_out) and np.array_equal(mask, want_mask) and len(mask) == (count + 7) // 8
        assert np.array_equal(train_kernels.relu_fp32_bw(grad, mask), ref.relu_fp32_bw(grad, want_mask))


@st.composite
def brn_case(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batch, channels = draw(st.integers(2, 5)), draw(st.integers(1, 4))
    height, width = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stats = draw(st.sampled_from(["var", "std"]))
    ramp = draw(st.sampled_from([0.0, 4.1e-5, 0.05]))
    r_max, d_max = (1.0, 0.0) if ramp and draw(st.booleans()) else (draw(st.sampled_from([1.0, 1.1, 1.25])),
                                                                     draw(st.sampled_from([0.0, 0.3, 0.5])))
    x = (rng.normal(0, 2, (batch, channels, height, width)) + rng.normal(0, 1, (1, channels, 1, 1))).astype(
        np.float32)
    state = BrnState(rng.uniform(0.5, 1.5, channels).astype(np.float32), rng.normal(0, 0.3, channels).astype(
        np.float32), rng.normal(0, 1, channels).astype(np.float32), rng.uniform(0.3, 4, channels).astype(np.float32),
        stats, 1e-5, draw(st.sampled_from([0.01, 5e-5, 0.3, 0.7])), r_max, d_max, 1.25, 0.5, ramp)
    return x, state, rng.normal(0, 1, x.shape).astype(np.float32)


def after_std(x: np.ndarray, state: BrnState) -> np.ndarray:
    return np.sqrt(x.astype(np.float64).var(axis=(0, 2, 3)) + state.eps)


@settings(max_examples=40, deadline=None)
@given(case=brn_case())
def test_batch_renorm_training_forward_and_backward(train_kernels, case):
    x, state, grad_output = case
    out, after = train_kernels.batch_renorm_fp32_fw_train(x, state)
    want_out, want_after = ref.batch_renorm_fp32_fw_train(x, state)
    assert_close(out, want_out)
    assert_close(after.running_mean, want_after.running_mean)
    assert_close(after.running_var, want_after.running_var)
    assert (after.r_max, after.d_max) == (want_after.r_max, want_after.d_max)  # the ramp, in double, exact
    grad_gamma, grad_beta = train_kernels.batch_renorm_fp32_wg(grad_output, x, state)
    want_gamma, want_beta = ref.batch_renorm_fp32_wg(grad_output, x, state)
    assert_close(grad_gamma, want_gamma)
    assert_close(grad_beta, want_beta)
    # The input gradient is (gamma r / std) (g - mean g - u mean(g u)): with few values per
    # channel it cancels to nearly 0 (two values: exactly 0 in exact arithmetic), so its error is
    # measured against the size of the terms, gamma r / std times the incoming gradient.
    terms = float(np.abs(state.gamma / after_std(x, state)).max() * 1.25 * np.abs(grad_output).max())
    assert_close(train_kernels.batch_renorm_fp32_ig(grad_output, x, state),
                 ref.batch_renorm_fp32_ig(grad_output, x, state), scale=terms)
    assert_close(train_kernels.batch_renorm_fp32_fw_eval(x[0], after), ref.batch_renorm_fp32_fw_eval(x[0], after))
    phase = train_kernels.batch_renorm_set_phase(state, 5e-5)
    want_phase = ref.batch_renorm_set_phase(state, 5e-5)
    assert (phase.momentum, phase.r_max, phase.d_max, phase.ramp_per_sample) == (
        want_phase.momentum, want_phase.r_max, want_phase.d_max, want_phase.ramp_per_sample)


def test_batch_renorm_ramp_follows_the_module_over_steps(train_kernels):
    """ar1-pytorch's ramp: r_max / d_max from 1 / 0 by 4.1e-5 per sample until the cap, in double."""
    rng = np.random.default_rng(3)
    state = BrnState(np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                     np.ones(2, np.float32), "std", 1e-5, 0.01, 1.0, 0.0, 1.25, 0.5, 4.1e-5)
    c_state, py_state = state, state
    for _ in range(100):  # 0.5 / (4.1e-5 x 128) = 95.3 steps to d_max's cap
        x = rng.normal(0, 1, (128, 2, 1, 1)).astype(np.float32)
        _, c_state = train_kernels.batch_renorm_fp32_fw_train(x, c_state)
        _, py_state = ref.batch_renorm_fp32_fw_train(x, py_state)
        assert (c_state.r_max, c_state.d_max) == (py_state.r_max, py_state.d_max)
    assert c_state.r_max > 1.25 and c_state.d_max > 0.5  # the last step overshoots, as there


@EXAMPLES
@given(batch=st.integers(1, 9), classes=st.integers(2, 12), scale=st.sampled_from([0.1, 3.0, 30.0]),
       seed=st.integers(0, 2**32 - 1))
def test_cross_entropy(train_kernels, batch, classes, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, scale, (batch, classes)).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    loss, grad = train_kernels.cross_entropy_fp32(logits, labels)
    want_loss, want_grad = ref.cross_entropy_fp32(logits, labels)
    assert abs(loss - want_loss) <= RTOL * max(abs(want_loss), 1e-3)
    assert_close(grad, want_grad)


def test_expf_and_logf_within_two_ulps(train_kernels):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-103, 88, 3000), rng.uniform(-1, 1, 1000), [0.0, -0.0, 1e-30, -87.0]])
    x = x.astype(np.float32)
    got, want = train_kernels.tinycl_expf(x), ref.tinycl_expf(x)
    ulp = np.spacing(np.abs(want).astype(np.float32))
    assert (np.abs(got.astype(np.float64) - want) <= 2 * np.maximum(ulp, np.float32(1.4e-45))).all()
    y = np.concatenate([rng.uniform(1e-6, 1e4, 3000), rng.uniform(0.5, 2, 1000), [1.0, 2.0, 1e-40, 3e38]])
    y = y.astype(np.float32)
    got, want = train_kernels.tinycl_logf(y), ref.tinycl_logf(y)
    assert (np.abs(got.astype(np.float64) - want) <= 2 * np.spacing(np.abs(want).astype(np.float32)) + 1e-12).all()


@EXAMPLES
@given(shape=st.sampled_from([(7,), (3, 5), (4, 3, 3, 3), (6, 1, 3, 3)]), momentum=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 5e-4]), first=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_sgd_dense_and_channels(train_kernels, shape, momentum, weight_decay, first, seed):
    rng = np.random.default_rng(seed)
    param, grad = rng.normal(0, 1, shape).astype(np.float32), rng.normal(0, 1, shape).astype(np.float32)
    buf = None if first else rng.normal(0, 1, shape).astype(np.float32)
    lr = float(rng.choice([1e-3, 5e-5, 0.1]))
    got, got_buf = train_kernels.sgd_fp32(param, grad, buf, lr, momentum, weight_decay)
    want, want_buf = ref.sgd_fp32(param, grad, buf, lr, momentum, weight_decay)
    assert_close(got, want)
    if momentum:
        assert_close(got_buf, want_buf)
    if len(shape) < 2:
        return
    axis = 0 if shape[1] == 1 else 1  # depthwise rows, else input-channel columns
    chosen = np.sort(rng.choice(shape[axis], rng.integers(1, shape[axis] + 1), replace=False))
    got, got_buf = train_kernels.sgd_fp32_channels(param, grad, buf, axis, chosen, lr, momentum, weight_decay)
    want, want_buf = ref.sgd_fp32_channels(param, grad, buf, axis, chosen, lr, momentum, weight_decay)
    assert_close(got, want)
    others = np.setdiff1d(np.arange(shape[axis]), chosen)
    assert np.array_equal(np.take(got, others, axis), np.take(param, others, axis))  # untouched, to the bit
    if momentum:
        assert_close(got_buf, want_buf if want_buf is not None else np.zeros(shape))


# ---------------------------------------------------------------- the loop's integer parts


def test_pcg32_published_vectors(train_kernels):
    """pcg32-demo round 1 (seed 42, sequence 54), as tests/test_prng.py checks the Python one."""
    assert train_kernels.pcg32_draws(42, 54, [("next", 0, 0)] * 6) == [
        0xA15C02B7, 0x7B47F409, 0xBA1D3330, 0x83D2F293, 0xBFA4784B, 0xCBED606E]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), stream=st.integers(0, 2**63 - 1), data=st.data())
def test_pcg32_draws_are_the_python_draws(train_kernels, seed, stream, data):
    kinds = st.sampled_from(["next", "bounded", "random", "permutation", "choice"])
    script = []
    for kind in data.draw(st.lists(kinds, min_size=1, max_size=12)):
        n = data.draw(st.integers(1, 3 << 30)) if kind == "bounded" else data.draw(st.integers(0, 60))
        k = data.draw(st.integers(0, n)) if kind == "choice" else 0
        script.append((kind, max(n, 1) if kind == "bounded" else n, k))
    assert train_kernels.pcg32_draws(seed, stream, script) == ref.pcg32_draws(seed, stream, script)


@settings(max_examples=60, deadline=None)
@given(new_items=st.integers(0, 3000), replay_items=st.integers(0, 3000), minibatch=st.integers(2, 256))
def test_minibatch_plan_and_padding(train_kernels, new_items, replay_items, minibatch):
    assert train_kernels.minibatch_plan(new_items, replay_items, minibatch) == ref.minibatch_plan(
        new_items, replay_items, minibatch)
    if new_items:
        assert np.array_equal(train_kernels.padded_rows(new_items, minibatch), ref.padded_rows(new_items, minibatch))


def test_sort(train_kernels):
    values = np.random.default_rng(1).permutation(300)[:77]
    assert np.array_equal(train_kernels.sort_int32(values), np.sort(values))


@pytest.mark.parametrize("policy", ["recipe", "ar1", "reservoir", "class-balanced"])
@settings(max_examples=12, deadline=None)
@given(capacity=st.integers(1, 24), classes=st.integers(1, 6), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_replay_update_policies(train_kernels, policy, capacity, classes, seed, data):
    """Batch after batch, the C update writes the same slots with the same items and leaves the
    generator where the Python memory leaves it."""
    rng_data = np.random.default_rng(seed)
    row_bytes = 3
    state = MemoryState(np.zeros((capacity, row_bytes), np.uint8), np.zeros(capacity, np.uint8), 0, 0,
                        np.zeros(classes, np.int64))
    py_rng, c_rng = Pcg32(seed, 1), Pcg32(seed, 1)
    for index in range(data.draw(st.integers(1, 6))):
        n = data.draw(st.integers(0, 30))
        new_rows = rng_data.integers(0, 256, (n + 3, row_bytes)).astype(np.uint8)
        new_labels = rng_data.integers(0, classes, n + 3).astype(np.uint8)
        offered = rng_data.permutation(n + 3)[:n]
        want, want_writes = ref.replay_update(state, policy, new_rows, new_labels, offered, index, py_rng)
        got, got_writes = train_kernels.replay_update(state, policy, new_rows, new_labels, offered, index, c_rng)
        assert got_writes == want_writes
        assert (py_rng.state, py_rng.inc) == (c_rng.state, c_rng.inc)
        assert np.array_equal(got.rows, want.rows) and np.array_equal(got.labels, want.labels)
        assert (got.size, got.seen) == (want.size, want.seen)
        assert np.array_equal(got.seen_per_class, want.seen_per_class)
        state = want


@EXAMPLES
@given(classes=st.integers(2, 8), features=st.integers(1, 9), seed=st.integers(0, 2**32 - 1))
def test_cwr_star(train_kernels, classes, features, seed):
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1, (classes, features)).astype(np.float32)
    consolidated = rng.normal(0, 1, (classes, features)).astype(np.float32)
    has = (rng.random(classes) < 0.5).astype(np.uint8)
    past = rng.integers(0, 50, classes).astype(np.float32) * has
    current = np.sort(rng.choice(classes, rng.integers(1, classes + 1), replace=False))
    counts = np.zeros(classes, np.int64)
    counts[current] = rng.integers(1, 30, len(current))
    assert_close(train_kernels.cwr_before_batch_fp32(weight, consolidated, has, current),
                 ref.cwr_before_batch_fp32(weight, consolidated, has, current))
    got = train_kernels.cwr_after_batch_fp32(weight, consolidated, has, past, current, counts)
    want = ref.cwr_after_batch_fp32(weight, consolidated, has, past, current, counts)
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
