"""The measured targets ``cortex_m4_qemu`` and ``rv32_qemu``: ``tinycl cost`` prices tinycl's own
C99 runtime with MAC/cycle derived from instructions per MAC counted under QEMU, each rate
following from its stated figures, and kept apart from the cited silicon targets."""

import pytest

from tinycl.device import CostConfig, estimate, load_target, target_names
from tinycl.device.targets import PASSES, PRIMITIVES

MEASURED = ("cortex_m4_qemu", "rv32_qemu")


def four_digits(x: float) -> float:
    return float(f"{x:.4g}")


@pytest.mark.parametrize("key", MEASURED)
def test_rates_follow_from_measured_instructions_per_mac(key):
    target = load_target(key)
    assert key in target_names()
    cpi = target.reference["cycles_per_instruction"]
    assert cpi.is_assumption and cpi.value == 1.2
    measured = {name: fig for name, fig in target.reference.items() if name.endswith("_instructions_per_mac")}
    assert all(fig.source.startswith("measured: ") for fig in measured.values())
    # every forward rate measured on a model except INT8 linear / pool (no such kernel in the runtime);
    # the training passes measured by the --train export except the dense conv (none in the measured
    # adaptive stage) and the pool's weight gradient (no weights)
    assert {name.removesuffix("_instructions_per_mac") for name in measured} == {
        "int8_forward_conv", "int8_forward_dw", "int8_forward_pw",
        "fp32_forward_conv", "fp32_forward_dw", "fp32_forward_pw", "fp32_forward_linear", "fp32_forward_pool",
        "fp32_weight_grad_dw", "fp32_weight_grad_pw", "fp32_weight_grad_linear",
        "fp32_input_grad_dw", "fp32_input_grad_pw", "fp32_input_grad_linear", "fp32_input_grad_pool"}
    for pass_name in PASSES:
        for primitive in PRIMITIVES:
            figure = target.mac_per_cycle[pass_name][primitive]
            assert figure.kind == "derived" and target.utilization[pass_name][primitive].value == 1.0
            name = f"{pass_name}_{primitive}_instructions_per_mac"
            if name in measured and pass_name in ("fp32_input_grad", "fp32_weight_grad"):
                assert not figure.is_assumption and "measured by the --train export" in figure.source
                assert "bench_export_train.py" in measured[name].source
            elif pass_name in ("fp32_input_grad", "fp32_weight_grad"):  # priced as the forward, said so
                assert figure.is_assumption and "--train export" in figure.source
                name = f"fp32_forward_{primitive}_instructions_per_mac"
            elif name not in measured:  # INT8 linear / pool: priced as INT8 pointwise, said so
                assert figure.is_assumption and "as int8 pw" in figure.source
                name = "int8_forward_pw_instructions_per_mac"
            assert figure.value == four_digits(1 / (measured[name].value * cpi.value)), (pass_name, primitive)


def test_kept_apart_from_the_cited_targets():
    """The measured files cite no silicon figure as a rate; the cited files do not use them."""
    for key in MEASURED:
        target = load_target(key)
        assert "Measured" in target.basis_note and "QEMU" in target.basis_note
        assert target.freq_hz.is_assumption
    for key in ("stm32l4", "vega"):
        assert not any("bench_export" in fig.source for fig in load_target(key).figures().values())


def test_tinycl_cost_prices_the_default_model_on_the_measured_targets():
    report = estimate(CostConfig(width=0.25, res=64, replays=100), list(MEASURED))
    m4, rv32 = report.targets
    # the INT8 frozen stage of MobileNetV1 x0.25 at 64 px: 2,378,752 MACs; at the measured
    # ~10 instructions per MAC, 1.2 cycles each and 80 MHz, about a third of a second
    assert report.frozen.forward_macs == 2_378_752
    assert 0.2 < m4.frozen_forward_s < 0.5 and 0.2 < rv32.frozen_forward_s < 0.5
