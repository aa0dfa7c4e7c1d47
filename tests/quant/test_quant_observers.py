import math

import pytest
import torch

from tinycl.errors import TinyclError
from tinycl.quant.fold import fold_bn
from tinycl.quant.observers import (
    HistogramObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    make_observer,
    scale_from_bound,
)


def test_minmax_unsigned_and_signed():
    x = torch.tensor([0.0, 1.0, 2.0, -5.0])
    unsigned, signed = MinMaxObserver(), MinMaxObserver(signed=True)
    unsigned.observe(x)
    signed.observe(x)
    unsigned.observe(torch.tensor([1.5]))
    assert unsigned.bound() == 2.0 and unsigned.scale() == 2.0 / 255
    assert signed.bound() == 5.0 and signed.scale() == 5.0 / 127


def test_percentile_on_known_distribution():
    obs = PercentileObserver(percentile=50.0, bins=1024)
    obs.observe(torch.arange(1000, dtype=torch.float32))
    width = 999 / 1024
    assert abs(obs.bound() - 500) <= 2 * width
    full = PercentileObserver(percentile=100.0)
    full.observe(torch.arange(1000, dtype=torch.float32))
    assert full.bound() == pytest.approx(999.0)


def test_mse_clips_an_outlier_but_not_uniform_data():
    uniform = MSEObserver()
    uniform.observe(torch.linspace(0, 1, 10001))
    assert uniform.bound() >= 0.98
    outlier = MSEObserver()
    # one outlier at 10 among n values in [0, 1]: the error n (b/255)**2 / 12 + (10 - b)**2 is
    # least at b = 10 / (1 + n / (12 * 255**2)) ≈ 4.385 for n = 1e6
    n = 1_000_000
    outlier.observe(torch.cat([torch.linspace(0, 1, n), torch.tensor([10.0])]))
    expected = 10 / (1 + n / (12 * 255**2))
    assert abs(outlier.bound() - expected) <= 10 / 256


def test_histogram_growth_merges_exactly():
    obs = HistogramObserver(bins=8)
    obs.observe(torch.tensor([0.1, 0.9, 1.0]))
    obs.observe(torch.tensor([3.5]))
    assert obs.top == 4.0
    assert float(obs.hist.sum()) == 4
    assert obs.hist.tolist() == [1, 2, 0, 0, 0, 0, 0, 1]


def test_all_zero_tensor_gets_unit_bound():
    obs = make_observer("mse")
    obs.observe(torch.zeros(10))
    assert obs.bound() == 0.0 and obs.scale() == scale_from_bound(1.0, False)


@pytest.mark.parametrize("name", ["minmax", "percentile", "mse"])
def test_errors(name):
    obs = make_observer(name)
    with pytest.raises(TinyclError, match="empty"):
        obs.bound()
    with pytest.raises(TinyclError, match="NaN or Inf"):
        obs.observe(torch.tensor([1.0, math.nan]))
    with pytest.raises(TinyclError, match="NaN or Inf"):
        obs.observe(torch.tensor([math.inf]))
    with pytest.raises(TinyclError, match="empty"):
        obs.observe(torch.zeros(0))
    with pytest.raises(TinyclError, match="unknown observer"):
        make_observer("kl")


def test_fold_bn_matches_eval_forward():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(6)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(2, 4, 7, 7)
    weight, bias = fold_bn(conv, bn)
    folded = torch.nn.functional.conv2d(x.double(), weight, bias, padding=1)
    assert torch.allclose(folded, bn(conv(x)).double(), atol=1e-5)
