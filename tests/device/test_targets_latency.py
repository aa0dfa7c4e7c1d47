"""Targets load with a source and a kind per figure; rates = listed x utilization; latency,
energy and battery formulas, each recomputed here from the TOML files themselves."""

import math
import sys
from importlib import resources

import pytest
from printed_equations import check_equation

from tinycl.device import CostConfig, battery_lifetime, estimate, load_target, target_names
from tinycl.device.latency import make_workload
from tinycl.device.targets import FIGURE_KINDS, PASSES, PRIMITIVES, parse_target
from tinycl.errors import TinyclError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def raw(name: str) -> dict:
    """A built-in target file read with tomllib alone (independent of the loader)."""
    return tomllib.loads((resources.files("tinycl.device") / "targets" / f"{name}.toml").read_text())


def toml_rate(data: dict, pass_name: str, primitive: str) -> float:
    return (
        data["mac_per_cycle"][pass_name][primitive]["value"]
        * data["utilization"][pass_name][primitive]["value"]
    )


def test_builtin_targets_have_a_source_and_kind_for_every_figure():
    assert {"vega", "stm32l4", "gap9", "cortex_m7"} <= set(target_names())
    for name in target_names():
        target = load_target(name)
        assert target.freq_hz.value > 0
        for key, fig in target.figures().items():
            assert fig.source.strip(), f"{name}: {key} has no source"
        assert target.active_power_w.kind in FIGURE_KINDS
        for p in PASSES:
            for k in PRIMITIVES:
                assert target.mac_per_cycle[p][k].kind in FIGURE_KINDS
                assert 0 < target.utilization[p][k].value <= 1
                assert target.utilization[p][k].kind is None


def test_rates_are_listed_times_utilization_for_every_target():
    for name in target_names():
        target, data = load_target(name), raw(name)
        for p in PASSES:
            for k in PRIMITIVES:
                basis = target.rate_basis(p, k)
                assert basis.listed_mac_per_cycle == data["mac_per_cycle"][p][k]["value"]
                assert basis.kind == data["mac_per_cycle"][p][k]["kind"]
                assert basis.utilization == data["utilization"][p][k]["value"]
                assert target.rate(p, k) == toml_rate(data, p, k)


def test_published_peaks_are_marked_peak():
    vega = load_target("vega")
    # arXiv 2007.13631 abstract: "a peak performance of 2.21 and 1.70 MAC/cycle"
    assert vega.mac_per_cycle["fp32_forward"]["pw"].value == 2.21
    assert vega.mac_per_cycle["fp32_weight_grad"]["pw"].value == 1.70
    # PULP-NN abstract: "up to 15.5 MACs/cycle on INT-8"
    assert vega.mac_per_cycle["int8_forward"]["pw"].value == 15.5
    for p in PASSES:
        assert {vega.mac_per_cycle[p][k].kind for k in PRIMITIVES} == {"peak"}
        assert all(vega.utilization[p][k].value < 1 for k in ("conv", "pw", "dw", "linear"))
    assert vega.active_power_w.kind == "peak"  # 49.4 mW at the 32.2 GOPS peak
    assert vega.sleep_power_w.value == 1.7e-6  # VEGA abstract
    # the STM32L4 rates are derived from the PULP papers' ratios, not measured peaks
    stm = load_target("stm32l4")
    assert stm.mac_per_cycle["fp32_forward"]["pw"].value == pytest.approx(4.39 / 36.6, abs=0.005)
    assert stm.mac_per_cycle["int8_forward"]["pw"].value == pytest.approx(15.5 / 30, abs=0.005)
    assert {stm.mac_per_cycle[p]["pw"].kind for p in PASSES} == {"derived"}
    assert stm.freq_hz.value == 80e6 and stm.freq_hz.is_assumption is False
    assert vega.freq_hz.is_assumption is True


def mean(*xs: float) -> float:
    return sum(xs) / len(xs)


def test_derived_utilizations_follow_their_stated_arithmetic():
    """The REFERENCES.md kernel anchors (instructions per MAC) give each derived utilization."""
    vega, stm = raw("vega")["utilization"], raw("stm32l4")["utilization"]
    parallel = 0.85  # vega.toml: assumption p
    # VEGA: best / mean over the 3 PW shapes (PULP-TrainLib mm_unroll_4x4, RV32IMFC) x p
    pw_fw = round(3.11 / mean(3.11, 3.44, 3.43) * parallel, 2)
    pw_wg = round(3.15 / mean(3.15, 3.30, 3.19) * parallel, 2)
    pw_ig = round(3.10 / mean(3.10, 4.00, 4.36) * parallel, 2)
    assert vega["fp32_forward"]["pw"]["value"] == pw_fw == 0.79
    assert vega["fp32_weight_grad"]["pw"]["value"] == pw_wg == 0.83
    assert vega["fp32_input_grad"]["pw"]["value"] == pw_ig == 0.69
    # depthwise: pw x PW/DW cost per MAC (naive PULP-TrainLib on the M4F)
    assert vega["fp32_forward"]["dw"]["value"] == round(pw_fw * 7.1 / 17.3, 2)
    assert vega["fp32_weight_grad"]["dw"]["value"] == round(pw_wg * 6.95 / 8.6, 2)
    assert vega["fp32_input_grad"]["dw"]["value"] == round(pw_ig * 7.8 / 27.65, 2)
    int8_pw = round(2.28 / mean(2.28, 2.75, 2.56) * parallel, 2)
    assert vega["int8_forward"]["pw"]["value"] == int8_pw
    assert vega["int8_forward"]["dw"]["value"] == round(
        int8_pw * mean(2.28, 2.75, 2.56) / mean(7.85, 8.52), 2
    )
    assert vega["int8_forward"]["pool"]["value"] == round(8 / 15.5, 2)
    # STM32L4: 1 / (instr/MAC x 1.2 cycles/instr) / listed
    cpi = 1.2

    def util(instr_per_mac: float, listed: float) -> float:
        return round(min(1.0, 1 / (instr_per_mac * cpi) / listed), 2)

    assert stm["fp32_forward"]["pw"]["value"] == util(7.1, 0.12)
    assert stm["fp32_weight_grad"]["pw"]["value"] == util(mean(6.1, 7.8), 0.12)
    assert stm["fp32_input_grad"]["pw"]["value"] == util(mean(7.2, 8.4), 0.12)
    assert stm["fp32_forward"]["dw"]["value"] == util(mean(16.8, 17.8), 0.12)
    assert stm["fp32_weight_grad"]["dw"]["value"] == util(mean(7.5, 9.7), 0.12)
    assert stm["fp32_input_grad"]["dw"]["value"] == util(mean(24.5, 30.8), 0.12)
    assert stm["int8_forward"]["pw"]["value"] == util(mean(2.28, 2.75, 2.56), 0.52)
    assert stm["int8_forward"]["dw"]["value"] == util(mean(7.85, 8.52), 0.52)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(speed=1), "x.toml: unknown key 'speed' (expected key, name,"),
        (
            lambda d: d["freq_hz"].update(unit="Hz"),
            "x.toml: freq_hz: unknown key 'unit' (expected value, source, kind)",
        ),
        (lambda d: d["sleep_power_w"].pop("source"), "x.toml: sleep_power_w: missing source"),
        (
            lambda d: d["mac_per_cycle"]["fp32_forward"]["pw"].update(kind="average"),
            "x.toml: mac_per_cycle.fp32_forward.pw: kind must be one of peak, sustained, derived",
        ),
        (
            lambda d: d["mac_per_cycle"]["int8_forward"]["dw"].pop("kind"),
            "x.toml: mac_per_cycle.int8_forward.dw: missing kind",
        ),
        (lambda d: d["active_power_w"].pop("kind"), "x.toml: active_power_w: missing kind"),
        (
            lambda d: d["utilization"]["fp32_input_grad"]["conv"].update(value=1.2),
            "x.toml: utilization.fp32_input_grad.conv: utilization must be in (0, 1], got 1.2",
        ),
        (
            lambda d: d["utilization"]["fp32_forward"]["pw"].update(kind="peak"),
            "x.toml: utilization.fp32_forward.pw: a utilization has no kind",
        ),
        (lambda d: d.pop("utilization"), "x.toml: missing table [utilization]"),
        (
            lambda d: d["utilization"]["fp32_forward"].pop("pool"),
            "x.toml: utilization: missing fp32_forward.pool",
        ),
        (
            lambda d: d["mac_per_cycle"]["fp32_forward"].update(gemm={"value": 1, "source": "x"}),
            "x.toml: mac_per_cycle: unknown key fp32_forward.gemm",
        ),
        (lambda d: d["memory"].pop("l2_bytes"), "x.toml: missing memory.l2_bytes"),
    ],
)
def test_loader_refuses_with_one_line(edit, message):
    data = raw("vega")
    edit(data)
    with pytest.raises(TinyclError) as exc:
        parse_target(data, "x.toml")
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_loader_reads_a_target_file(tmp_path):
    path = tmp_path / "mine.toml"
    text = (resources.files("tinycl.device") / "targets" / "vega.toml").read_text()
    path.write_text(text.replace('key = "vega"', 'key = "mine"'))
    assert load_target(str(path)).key == "mine"
    path.write_text("extra = 1\n" + text)
    with pytest.raises(TinyclError, match="unknown key 'extra'"):
        load_target(str(path))


def test_unknown_target():
    with pytest.raises(TinyclError, match="unknown target 'nope'; known targets: "):
        load_target("nope")


def test_workload_recipe():
    w = make_workload(300, 1500)
    assert w.new_per_minibatch == 21  # 300 // (1800 // 128), ar1-pytorch
    assert w.minibatches_per_epoch == 15 and w.minibatches_per_cl_batch == 60


def test_latency_composition_from_the_toml_figures():
    report = estimate(CostConfig(), ["vega"])
    est = report.targets[0]
    data = raw("vega")
    freq = data["freq_hz"]["value"]
    layer2 = est.layers[2]  # frozen pointwise, INT8: 15.5 peak x 0.77
    assert layer2.forward_s == pytest.approx(8_388_608 / (15.5 * 0.77) / freq, rel=1e-12)
    assert layer2.forward_s == pytest.approx(
        8_388_608 / toml_rate(data, "int8_forward", "pw") / freq, rel=1e-12
    )
    layer22 = est.layers[22]  # adaptive pointwise 512 -> 512 at 8x8, FP32
    assert layer22.backward_s == pytest.approx(
        16_777_216 / (1.70 * 0.69) / freq + 16_777_216 / (1.70 * 0.83) / freq, rel=1e-12
    )
    w = report.workload
    assert est.minibatch_s == pytest.approx(
        21 * est.frozen_forward_s + 128 * est.train_sample_s + est.update_s
    )
    assert est.cl_batch_s == pytest.approx(
        300 * est.frozen_forward_s + 60 * (128 * est.train_sample_s + est.update_s)
    )
    assert w.minibatches_per_cl_batch == 60
    assert est.energy_j(est.minibatch_s) == pytest.approx(est.minibatch_s * 0.0494)


def expected_minibatch_s(rows, data: dict, workload) -> float:
    """t_mb recomputed from the layer MACs and the TOML file, without the latency module."""
    freq = data["freq_hz"]["value"]
    frozen = train = 0.0
    for r in rows:
        if r.stage == "frozen":
            frozen += r.forward_macs / toml_rate(data, "int8_forward", r.kind)
        else:
            train += r.forward_macs / toml_rate(data, "fp32_forward", r.kind)
            train += r.input_grad_macs / toml_rate(data, "fp32_input_grad", r.kind)
            train += r.weight_grad_macs / toml_rate(data, "fp32_weight_grad", r.kind)
    trainable = sum(r.trainable_values for r in rows if r.stage == "adaptive")
    update = 3 * trainable / toml_rate(data, "fp32_forward", "linear")
    cycles = workload.new_per_minibatch * frozen + workload.minibatch_size * train + update
    return cycles / freq


def test_paper_comparison_recomputed_from_the_toml_files():
    report = estimate(CostConfig(), ["vega", "stm32l4"])
    vega, stm = raw("vega"), raw("stm32l4")
    t_vega = expected_minibatch_s(report.layers, vega, report.workload)
    t_stm = expected_minibatch_s(report.layers, stm, report.workload)
    (cmp,) = report.comparisons()
    assert cmp.fast == "vega" and cmp.slow == "stm32l4"
    assert report.targets[0].minibatch_s == pytest.approx(t_vega, rel=1e-12)
    assert report.targets[1].minibatch_s == pytest.approx(t_stm, rel=1e-12)
    assert cmp.speedup == pytest.approx(t_stm / t_vega, rel=1e-12)
    e_vega = t_vega * vega["active_power_w"]["value"]
    e_stm = t_stm * stm["active_power_w"]["value"]
    assert cmp.energy_ratio == pytest.approx(e_stm / e_vega, rel=1e-12)
    # battery: 3000 mAh at 3.7 V, one mini-batch a minute; VEGA keeps up, the STM32L4 does not
    battery_j = 3000 * 3.6 * 3.7
    sleep = vega["sleep_power_w"]["value"]
    bat = report.targets[0].battery(3000, 3.7, 60)
    assert bat.keeps_up and bat.period_used_s == 60
    assert bat.lifetime_h == pytest.approx(
        battery_j / (e_vega + sleep * (60 - t_vega)) * 60 / 3600, rel=1e-12
    )
    slow = report.targets[1].battery(3000, 3.7, 60)
    assert not slow.keeps_up and slow.period_used_s == pytest.approx(t_stm, rel=1e-12)
    assert slow.lifetime_h == pytest.approx(battery_j / e_stm * t_stm / 3600, rel=1e-12)


def test_pass_bases_are_mac_weighted():
    report = estimate(CostConfig(), ["vega"])
    est, data = report.targets[0], raw("vega")
    fwd = est.passes["fp32_forward"]
    adaptive = [r for r in report.layers if r.stage == "adaptive"]
    assert fwd.macs == sum(r.forward_macs for r in adaptive) == 59_303_936
    cycles = sum(r.forward_macs / toml_rate(data, "fp32_forward", r.kind) for r in adaptive)
    assert fwd.cycles == pytest.approx(cycles, rel=1e-12)
    assert fwd.effective_mac_per_cycle == pytest.approx(59_303_936 / cycles, rel=1e-12)
    assert fwd.listed_mac_per_cycle == pytest.approx(2.21, rel=1e-12)
    assert set(fwd.primitives) == {"dw", "pw", "linear", "pool"}
    assert set(est.passes["int8_forward"].primitives) == {"conv", "dw", "pw"}
    assert "pool" not in est.passes["fp32_weight_grad"].primitives  # no weights, no MACs
    assert sum(fwd.macs_by_primitive.values()) == fwd.macs


def test_battery_formula_evaluates_to_its_printed_result():
    bat = battery_lifetime(3000, 3.7, 60, 25.0, 1.25, 1.7e-6)
    assert bat.battery_j == pytest.approx(3.0 * 3600 * 3.7)
    assert bat.lifetime_h == pytest.approx(39_960 / (1.25 + 1.7e-6 * 35) * 60 / 3600)
    assert "3000 mAh" in bat.formula() and bat.keeps_up
    check_equation(bat.formula())
    check_equation(bat.period_formula())
    assert bat.period_formula().endswith("= 60 s")
    # one mini-batch takes longer than the period: the period used is the mini-batch time,
    # and the printed formula says so (it used to print 60 s and a lifetime 8x too long)
    slow = battery_lifetime(3000, 3.7, 60, 120.0, 5.0, 1e-6)
    assert not slow.keeps_up and slow.period_used_s == 120.0
    assert slow.lifetime_s == pytest.approx(39_960 / 5.0 * 120)
    assert "* 120 s / 3600 s/h = 266.4 h" in slow.formula()
    assert "(120 s - 120 s)" in slow.formula()
    check_equation(slow.formula())
    assert slow.period_formula() == "T = max(T_requested, t_mb) = max(60 s, 120 s) = 120 s"
    assert "cannot keep up" in slow.note() and "every 120 s" in slow.note()
    assert math.isclose(slow.shown_lifetime_h, slow.lifetime_h, rel_tol=1e-5)


def test_does_not_fit_is_a_finding():
    report = estimate(CostConfig(norm="frozen"), ["stm32l4"])
    (finding,) = report.findings()
    assert "fits no memory of the target" in finding and "89,096,584" in finding
    small = estimate(CostConfig(lr_layer=25, replays=10, new_images=10, bits=8), ["vega"])
    assert small.targets[0].fits()["external_bytes"] and not small.findings()
