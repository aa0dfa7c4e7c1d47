import torch
import torch.nn.functional as F

from tinycl.models import split
from tinycl.models.mobilenet_v1 import MobileNetV1
from tinycl.train.optim import ChannelSGD, make_optimizer
from tinycl.train.sparse import SparseUpdateConfig, sparsify

RECIPE = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}  # ar1-pytorch SGD (DESIGN.md)




def adaptive_v1(ratios=None, seed=0):
    torch.manual_seed(0)
    _, adaptive = split(MobileNetV1(num_classes=10, width=0.25), 19)
    if ratios is not None:
        sparsify(adaptive, SparseUpdateConfig(ratios=ratios, seed=seed), first_index=20)
    return adaptive.train()


def batches(steps, n=8):
    gen = torch.Generator().manual_seed(1)
    return [(torch.relu(torch.randn(n, 128, 4, 4, generator=gen)), torch.randint(0, 10, (n,), generator=gen))
            for _ in range(steps)]


def step(adaptive, opt, x, y):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(adaptive(x), y).backward()
    opt.step()


def test_dense_run_is_bit_identical_to_torch_sgd():
    ours, ref = adaptive_v1(), adaptive_v1()
    opt = make_optimizer(ours, **RECIPE)
    ref_opt = torch.optim.SGD(ref.parameters(), **RECIPE)
    assert isinstance(opt, ChannelSGD) and not opt.channel_queries
    for x, y in batches(3):
        step(ours, opt, x, y)
        step(ref, ref_opt, x, y)
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
        assert torch.equal(opt.state[p]["momentum_buffer"], ref_opt.state[q]["momentum_buffer"])


def test_ratio_one_sparse_layer_is_torch_sgd():
    # Ratio 1: the sparse kernel computes the dense gradient and the optimizer gives torch's step.
    ours, ref = adaptive_v1({"20": 1.0}), adaptive_v1()
    opt, ref_opt = make_optimizer(ours, **RECIPE), torch.optim.SGD(ref.parameters(), **RECIPE)
    assert len(opt.channel_queries) == 1
    for x, y in batches(2):
        step(ours, opt, x, y)
        step(ref, ref_opt, x, y)
    torch.testing.assert_close(ours[0][0].weight, ref[0][0].weight, rtol=0, atol=1e-7)


def test_momentum_and_decay_move_only_the_chosen_channels():
    # Layer 20 (pointwise, 128 -> 128): input channels = weight columns (axis 1); layer 21
    # (depthwise, 128 channels): rows (axis 0). Two steps: the second has a momentum buffer.
    adaptive = adaptive_v1({"20": 0.25, "21": 0.5}, seed=3)
    opt = make_optimizer(adaptive, **RECIPE)
    pw, dw = adaptive[0][0], adaptive[1][0]
    # Reference: torch SGD on a copy; its chosen columns / rows are what ours must equal.
    ref = {m: torch.nn.Parameter(m.weight.detach().clone()) for m in (pw, dw)}
    ref_opt = torch.optim.SGD(list(ref.values()), **RECIPE)
    for x, y in batches(2):
        before = {m: m.weight.detach().clone() for m in (pw, dw)}
        buffers = {m: opt.state[m.weight].get("momentum_buffer") for m in (pw, dw)}
        buffers = {m: None if b is None else b.clone() for m, b in buffers.items()}
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(adaptive(x), y).backward()
        for m in (pw, dw):
            ref[m].grad = m.weight.grad.clone()
            with torch.no_grad():
                ref[m].copy_(before[m])
            if buffers[m] is not None:
                ref_opt.state[ref[m]]["momentum_buffer"] = buffers[m].clone()
        opt.step()
        ref_opt.step()
        for m, axis, count, total in ((pw, 1, 32, 128), (dw, 0, 64, 128)):
            got_axis, chosen = m.updated_channels()
            assert got_axis == axis and chosen.numel() == count
            others = torch.tensor([c for c in range(total) if c not in set(chosen.tolist())])
            # Unchosen: weight and momentum buffer bit-identical to before the step.
            assert torch.equal(m.weight.index_select(axis, others), before[m].index_select(axis, others))
            buf = opt.state[m.weight]["momentum_buffer"]
            old = torch.zeros_like(buf) if buffers[m] is None else buffers[m]
            assert torch.equal(buf.index_select(axis, others), old.index_select(axis, others))
            # Chosen: torch's SGD step (decay and momentum included), to the last bit.
            assert torch.equal(m.weight.index_select(axis, chosen), ref[m].detach().index_select(axis, chosen))
            assert torch.equal(buf.index_select(axis, chosen),
                               ref_opt.state[ref[m]]["momentum_buffer"].index_select(axis, chosen))
            assert not torch.equal(m.weight.index_select(axis, chosen), before[m].index_select(axis, chosen))
    # Torch SGD would have moved every column of the pointwise weight (decay on the zero grads).
    assert torch.count_nonzero(ref[pw].detach() - before[pw]) > pw.weight.numel() // 2


def test_bias_only_layer_weight_never_moves():
    torch.manual_seed(0)
    _, adaptive = split(MobileNetV1(num_classes=10, width=0.25), 19)
    sparsify(adaptive, SparseUpdateConfig(bias_only=("21",)), first_index=20)
    adaptive.train()
    opt = make_optimizer(adaptive, **RECIPE)
    weight = adaptive[1][0].weight.detach().clone()
    for x, y in batches(2):
        step(adaptive, opt, x, y)
    assert torch.equal(adaptive[1][0].weight, weight)
    assert "momentum_buffer" not in opt.state[adaptive[1][0].weight]


def test_state_dict_round_trip_resumes_the_same_steps():
    data = batches(3)
    full = adaptive_v1({"20": 0.25, "22": 0.5}, seed=5)
    opt = make_optimizer(full, **RECIPE)
    for x, y in data:
        step(full, opt, x, y)
    # Two steps, save, rebuild everything from the state dicts, one more step.
    part = adaptive_v1({"20": 0.25, "22": 0.5}, seed=5)
    part_opt = make_optimizer(part, **RECIPE)
    for x, y in data[:2]:
        step(part, part_opt, x, y)
    saved_model, saved_opt = part.state_dict(), part_opt.state_dict()
    assert sorted(saved_opt["state"]) == list(range(len(saved_opt["state"])))
    resumed = adaptive_v1({"20": 0.25, "22": 0.5}, seed=5)
    resumed.load_state_dict(saved_model)
    for m, n in zip(resumed.modules(), part.modules(), strict=True):  # same selector RNG state
        if hasattr(m, "selector"):
            m.selector.generator.set_state(n.selector.generator.get_state())
    resumed_opt = make_optimizer(resumed, **RECIPE)
    resumed_opt.load_state_dict(saved_opt)
    step(resumed, resumed_opt, *data[2])
    for p, q in zip(resumed.parameters(), full.parameters(), strict=True):
        assert torch.equal(p, q)
    # torch's SGD reads the same state dict (plain tensors, torch's keys).
    torch.optim.SGD(part.parameters(), **RECIPE).load_state_dict(saved_opt)
