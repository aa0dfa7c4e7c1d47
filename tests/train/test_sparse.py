import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinycl.errors import TinyclError
from tinycl.models import split
from tinycl.models.mobilenet_v1 import MobileNetV1
from tinycl.train.sparse import (
    MaskedReLU,
    SparseConv2d,
    SparseLinear,
    SparseUpdateConfig,
    live_saved_bytes,
    sparse_conv2d,
    sparse_linear,
    sparse_modules,
    sparsify,
)

ATOL = 1e-5




def saved_bytes(fn):
    """Bytes of every tensor autograd saves for backward while ``fn()`` runs, and its result."""
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(sizes), out


def dense_and_sparse_grads(op, sparse_op, x, weight, bias, grad_out):
    grads = []
    for f in (op, sparse_op):
        xi = x.clone().requires_grad_(True)
        wi = weight.clone().requires_grad_(True)
        bi = None if bias is None else bias.clone().requires_grad_(True)
        f(xi, wi, bi).backward(grad_out)
        grads.append((xi.grad, wi.grad, None if bi is None else bi.grad))
    return grads


CONVS = {  # name: (in, out, kernel, stride, groups)
    "dense3x3": (8, 12, 3, 2, 1),
    "depthwise": (16, 16, 3, 1, 16),
    "pointwise": (16, 8, 1, 1, 1),
}


@pytest.mark.parametrize("kind", list(CONVS))
@pytest.mark.parametrize("dim", ["in", "out"])
def test_conv_chosen_channels_match_dense_others_exactly_zero(kind, dim):
    c_in, c_out, k, stride, groups = CONVS[kind]
    torch.manual_seed(0)
    x = torch.randn(3, c_in, 9, 9)
    weight = torch.randn(c_out, c_in // groups, k, k)
    bias = torch.randn(c_out)
    out = F.conv2d(x, weight, bias, stride, k // 2, 1, groups)
    grad_out = torch.randn_like(out)
    n = c_out if groups > 1 or dim == "out" else c_in
    channels = torch.tensor([0, 3, n - 1])
    (gx, gw, gb), (sx, sw, sb) = dense_and_sparse_grads(
        lambda x, w, b: F.conv2d(x, w, b, stride, k // 2, 1, groups),
        lambda x, w, b: sparse_conv2d(x, w, b, channels, dim, stride, k // 2, 1, groups),
        x, weight, bias, grad_out,
    )
    axis = 0 if groups > 1 or dim == "out" else 1
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[channels] = True
    torch.testing.assert_close(sw.index_select(axis, channels), gw.index_select(axis, channels), atol=ATOL, rtol=0)
    assert torch.count_nonzero(sw.index_select(axis, (~chosen).nonzero().flatten())) == 0
    torch.testing.assert_close(sx, gx, atol=ATOL, rtol=0)
    torch.testing.assert_close(sb, gb, atol=ATOL, rtol=0)


@pytest.mark.parametrize("dim", ["in", "out"])
def test_linear_chosen_channels_match_dense_others_exactly_zero(dim):
    torch.manual_seed(1)
    x, weight, bias = torch.randn(5, 32), torch.randn(10, 32), torch.randn(10)
    grad_out = torch.randn(5, 10)
    channels = torch.tensor([1, 2, 7])
    (gx, gw, gb), (sx, sw, sb) = dense_and_sparse_grads(
        F.linear, lambda x, w, b: sparse_linear(x, w, b, channels, dim), x, weight, bias, grad_out
    )
    axis = 1 if dim == "in" else 0
    torch.testing.assert_close(sw.index_select(axis, channels), gw.index_select(axis, channels), atol=ATOL, rtol=0)
    assert torch.count_nonzero(sw) == channels.numel() * weight.shape[1 - axis]
    torch.testing.assert_close(sx, gx, atol=ATOL, rtol=0)
    torch.testing.assert_close(sb, gb, atol=ATOL, rtol=0)


def test_saved_bytes_pointwise_and_depthwise_shrink_by_the_ratio():
    # Input from the frozen stage (no grad): the dense conv keeps x (and W); the sparse one keeps
    # x[:, S] plus the int64 index of S, and no weight (no input gradient is needed).
    torch.manual_seed(0)
    x = torch.randn(4, 64, 8, 8)
    pw = torch.randn(32, 64, 1, 1, requires_grad=True)
    dw = torch.randn(64, 1, 3, 3, requires_grad=True)
    channels = torch.arange(0, 64, 4)  # 16 of 64 = ratio 0.25
    x_bytes = 4 * 64 * 8 * 8 * 4
    dense, _ = saved_bytes(lambda: F.conv2d(x, pw))
    assert dense >= x_bytes
    sparse, _ = saved_bytes(lambda: sparse_conv2d(x, pw, None, channels, "in"))
    assert sparse == x_bytes // 4 + 16 * 8
    sparse_dw, _ = saved_bytes(lambda: sparse_conv2d(x, dw, None, channels, "in", 1, 1, 1, 64))
    assert sparse_dw == x_bytes // 4 + 16 * 8
    # Output-channel selection on a dense conv keeps all of x: compute saving only.
    out_sel, _ = saved_bytes(lambda: sparse_conv2d(x, pw, None, torch.arange(8), "out"))
    assert out_sel == x_bytes + 8 * 8
    # With an input gradient needed, the (shared, not copied) weight is kept as well.
    xg = x.clone().requires_grad_(True)
    with_w, _ = saved_bytes(lambda: sparse_conv2d(xg, pw, None, channels, "in"))
    assert with_w == x_bytes // 4 + 16 * 8 + 32 * 64 * 4
    # Linear: 256 features at ratio 0.5.
    xl = torch.randn(8, 256)
    wl = torch.randn(10, 256, requires_grad=True)
    sparse_l, _ = saved_bytes(lambda: sparse_linear(xl, wl, None, torch.arange(128), "in"))
    assert sparse_l == 8 * 128 * 4 + 128 * 8
    # Bias-only: nothing of the activation is kept, and no weight gradient is produced.
    bias = torch.zeros(32, requires_grad=True)
    bias_only, out = saved_bytes(lambda: sparse_conv2d(x, pw, bias, torch.empty(0, dtype=torch.long)))
    assert bias_only == 0
    out.sum().backward()
    assert pw.grad is None and torch.equal(bias.grad, torch.full((32,), 4 * 8 * 8.0))


@pytest.mark.parametrize("upper", [None, 6.0])
def test_masked_relu_matches_relu_and_keeps_a_byte_mask(upper):
    x = torch.randn(4, 8, 5, 5) * 5
    x[0, 0, 0, 0] = 0.0
    x[0, 0, 0, 1] = 6.0
    reference = nn.ReLU() if upper is None else nn.ReLU6()
    xr, xm = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g = torch.randn_like(x)
    reference(xr).backward(g)
    nbytes, out = saved_bytes(lambda: MaskedReLU(upper)(xm))
    out.backward(g)
    assert torch.equal(out, reference(x)) and torch.equal(xm.grad, xr.grad)
    assert nbytes == x.numel()  # one bool per value, not four bytes


def test_relu_masks_make_the_saving_real_in_pytorch():
    # Live activation storage over one step: with masks, the sparse stage keeps less than dense.
    def live(adaptive):
        return live_saved_bytes(adaptive, lambda: adaptive(x).sum())

    x = torch.randn(8, 128, 4, 4)
    _, dense = adaptive_v1()
    _, sparse = adaptive_v1()
    sparsify(sparse, {str(i): 0.25 for i in range(20, 27)}, first_index=20)
    _, no_masks = adaptive_v1()
    sparsify(no_masks, SparseUpdateConfig({str(i): 0.25 for i in range(20, 27)}, relu_masks=False), first_index=20)
    assert live(sparse) < 0.75 * live(dense) < live(no_masks)


def adaptive_v1(width=0.25, lr_layer=19):
    torch.manual_seed(0)
    model = MobileNetV1(num_classes=10, width=width)
    _, adaptive = split(model, lr_layer)
    return model, adaptive


def test_sparsify_shares_parameters_and_matches_dense_on_chosen_channels():
    model, adaptive = adaptive_v1()
    reference = MobileNetV1(num_classes=10, width=0.25)
    reference.load_state_dict(model.state_dict())
    _, dense = split(reference, 19)
    params_before = [id(p) for p in adaptive.parameters()]
    # Layer 20 = block10.pw, 21 = block11.dw (ar1-pytorch numbering).
    config = SparseUpdateConfig(ratios={"20": 0.25, "block11.dw": 0.5, "head": 1.0}, seed=3)
    sparsify(adaptive, config, first_index=20, layer_names=model.layer_names()[20:])
    assert [id(p) for p in adaptive.parameters()] == params_before
    assert list(adaptive.state_dict()) == list(dense.state_dict())
    assert len(sparse_modules(adaptive)) == 3
    assert isinstance(adaptive[0][0], SparseConv2d) and isinstance(adaptive[-1].linear, SparseLinear)
    x = torch.randn(6, 128, 4, 4)
    adaptive.train()
    dense.train()
    adaptive(x).square().sum().backward()
    dense(x).square().sum().backward()
    for (name, p), q in zip(adaptive.named_parameters(), dense.parameters(), strict=True):
        if name == "0.0.weight":  # pointwise layer 20: 32 of 128 input channels (dim 1)
            chosen = adaptive[0][0].last_channels
            assert chosen.numel() == 32
            torch.testing.assert_close(p.grad[:, chosen], q.grad[:, chosen], atol=ATOL, rtol=1e-4)
            assert torch.count_nonzero(p.grad) == 32 * 128
        elif name == "1.0.weight":  # depthwise layer 21 ("block11.dw"): 64 of 128 channels
            chosen = adaptive[1][0].last_channels
            assert chosen.numel() == 64
            torch.testing.assert_close(p.grad[chosen], q.grad[chosen], atol=ATOL, rtol=1e-4)
            assert torch.count_nonzero(p.grad) == 64 * 9
        else:  # every other gradient, input gradients through sparse layers included, is dense
            torch.testing.assert_close(p.grad, q.grad, atol=ATOL, rtol=1e-4)


def test_selection_policies():
    _, adaptive = adaptive_v1()
    with torch.no_grad():
        adaptive[2][0].weight[:, 5] *= 100  # layer 22 (pw): input channel 5 dominates
    sparsify(adaptive, SparseUpdateConfig(ratios={"22": 0.25, "20": 0.25}, policy="topk"), first_index=20)
    top = adaptive[2][0].selector.next()
    assert top.numel() == 32 and 5 in top.tolist()
    assert torch.equal(adaptive[2][0].selector.next(), top)  # fixed once
    _, adaptive = adaptive_v1()
    sparsify(adaptive, SparseUpdateConfig(ratios={"20": 0.5}, seed=7), first_index=20)
    picks = [adaptive[0][0].selector.next() for _ in range(2)]
    assert not torch.equal(picks[0], picks[1])  # random: a new subset each step
    _, again = adaptive_v1()
    sparsify(again, SparseUpdateConfig(ratios={"20": 0.5}, seed=7), first_index=20)
    assert torch.equal(again[0][0].selector.next(), picks[0])  # seeded
    _, adaptive = adaptive_v1()
    sparsify(adaptive, SparseUpdateConfig(ratios={"head": 0.1}, policy="fixed", fixed={"head": [3, 1]}),
             first_index=20, layer_names=[f"l{i}" for i in range(8)] + ["head"])
    assert adaptive[-1].linear.selector.next().tolist() == [1, 3]


def test_bias_only_layer_keeps_weight_untouched():
    _, adaptive = adaptive_v1()
    sparsify(adaptive, SparseUpdateConfig(bias_only=("21",)), first_index=20)
    adaptive.train()
    adaptive(torch.randn(2, 128, 4, 4)).sum().backward()
    assert adaptive[1][0].weight.grad is None
    assert adaptive[1][1].bias.grad is not None and adaptive[0][0].weight.grad is not None


def test_eval_and_no_grad_forward_equal_the_dense_module():
    model, adaptive = adaptive_v1()
    x = torch.randn(2, 128, 4, 4)
    model.eval()
    with torch.no_grad():
        before = adaptive(x)
        sparsify(adaptive, {"20": 0.25, "26": 0.5, "28": 0.5}, first_index=20)
        assert torch.equal(adaptive(x), before)
    model.train()
    with torch.no_grad():
        dense_train = adaptive(x)  # no grad: the plain conv path
    assert torch.equal(adaptive(x), dense_train)  # the sparse kernels' forward is F.conv2d's


def test_validation_errors_are_one_line():
    _, adaptive = adaptive_v1()
    for ratios, message in [
        ({"20": 0.0}, r"ratio for layer '20' must be in \(0, 1\], got 0.0"),
        ({"20": 1.5}, r"must be in \(0, 1\], got 1.5"),
        ({"19": 0.5}, r"unknown layer '19'; adaptive stage has layers 20..28"),
        ({"fc": 0.5}, r"unknown layer 'fc'"),
        ({"27": 0.5}, r"layer '27' has no conv or linear"),
    ]:
        with pytest.raises(TinyclError, match=message) as err:
            sparsify(adaptive, ratios, first_index=20)
        assert "\n" not in str(err.value)
    with pytest.raises(TinyclError, match="policy 'best' unknown"):
        SparseUpdateConfig(ratios={"20": 0.5}, policy="best")
    with pytest.raises(TinyclError, match="needs a channel list"):
        SparseUpdateConfig(ratios={"20": 0.5}, policy="fixed")
    with pytest.raises(TinyclError, match="fixed channels for layer '20' must be in 0..127"):
        sparsify(adaptive, SparseUpdateConfig(ratios={"20": 1.0}, policy="fixed", fixed={"20": [128]}),
                 first_index=20)
    sparsify(adaptive, {"21": 0.5}, first_index=20)
    with pytest.raises(TinyclError, match="already sparsified"):
        sparsify(adaptive, {"21": 0.5}, first_index=20)
    with pytest.raises(TinyclError, match="groups=2"):
        sparse_conv2d(torch.randn(1, 4, 3, 3), torch.randn(4, 2, 1, 1), None, None, groups=2)
