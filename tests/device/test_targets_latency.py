"""Targets load with a source per figure; latency, energy and battery formulas."""

import pytest

from tinycl.device import CostConfig, battery_lifetime, estimate, load_target, target_names
from tinycl.device.latency import make_workload
from tinycl.errors import TinyclError


def test_builtin_targets_have_a_source_for_every_figure():
    assert {"vega", "stm32l4", "gap9", "cortex_m7"} <= set(target_names())
    for name in target_names():
        target = load_target(name)
        assert target.freq_hz.value > 0
        for key, fig in target.figures().items():
            assert fig.source.strip(), f"{name}: {key} has no source"


def test_cited_figures():
    vega = load_target("vega")
    assert vega.rate("fp32_forward", "conv") == 2.21  # arXiv 2007.13631
    assert vega.rate("fp32_weight_grad", "pw") == 1.70
    assert vega.sleep_power_w.value == 1.7e-6  # VEGA abstract
    assert load_target("stm32l4").freq_hz.value == 80e6
    assert load_target("stm32l4").freq_hz.is_assumption is False
    assert load_target("vega").freq_hz.is_assumption is True


def test_unknown_target():
    with pytest.raises(TinyclError, match="unknown target 'nope'; known targets: "):
        load_target("nope")


def test_workload_recipe():
    w = make_workload(300, 1500)
    assert w.new_per_minibatch == 21  # 300 // (1800 // 128), ar1-pytorch
    assert w.minibatches_per_epoch == 15 and w.minibatches_per_cl_batch == 60


def test_latency_composition():
    report = estimate(CostConfig(), ["vega"])
    est = report.targets[0]
    vega = est.target
    layer2 = est.layers[2]  # frozen pointwise, INT8
    assert layer2.forward_s == pytest.approx(8_388_608 / 15.5 / vega.freq_hz.value)
    layer22 = est.layers[22]  # adaptive pointwise, FP32
    assert layer22.backward_s == pytest.approx(2 * 16_777_216 / 1.70 / vega.freq_hz.value)
    w = report.workload
    assert est.minibatch_s == pytest.approx(
        21 * est.frozen_forward_s + 128 * est.train_sample_s + est.update_s
    )
    assert est.cl_batch_s == pytest.approx(
        300 * est.frozen_forward_s + 60 * (128 * est.train_sample_s + est.update_s)
    )
    assert w.minibatches_per_cl_batch == 60
    assert est.energy_j(est.minibatch_s) == pytest.approx(est.minibatch_s * 0.0494)


def test_battery_formula():
    bat = battery_lifetime(3000, 3.7, 60, 25.0, 1.25, 1.7e-6)
    assert bat.battery_j == pytest.approx(3.0 * 3600 * 3.7)
    assert bat.lifetime_h == pytest.approx(39_960 / (1.25 + 1.7e-6 * 35) * 60 / 3600)
    assert "3000 mAh" in bat.formula() and bat.keeps_up
    slow = battery_lifetime(3000, 3.7, 60, 120.0, 5.0, 1e-6)
    assert not slow.keeps_up
    assert slow.lifetime_s == pytest.approx(39_960 / 5.0 * 120)


def test_vega_faster_and_more_efficient_than_stm32l4():
    report = estimate(CostConfig(), ["vega", "stm32l4"])
    (cmp,) = report.comparisons()
    assert cmp.fast == "vega" and cmp.slow == "stm32l4"
    assert 10 < cmp.speedup < 1000 and 10 < cmp.energy_ratio < 1000


def test_does_not_fit_is_a_finding():
    report = estimate(CostConfig(), ["stm32l4"])
    (finding,) = report.findings()
    assert "fits no memory of the target" in finding and "89,096,584" in finding
    small = estimate(CostConfig(lr_layer=25, replays=10, new_images=10, bits=8), ["vega"])
    assert small.targets[0].fits()["external_bytes"] and not small.findings()
