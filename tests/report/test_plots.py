"""Plots a reader understands: titles that tell runs apart, axes scaled to the data, plain ticks."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tinycl.config import RunConfig  # noqa: E402
from tinycl.report.plots import accuracy_limits, plot_accuracy_curves, run_title  # noqa: E402
from tinycl.report.sweep import Cell, cells, markdown_table, memory_axis, plot_accuracy_vs_memory  # noqa: E402


@pytest.fixture
def kept_figures(monkeypatch):
    """The figures the plot functions close, kept open for inspection (closed at the end)."""
    close = plt.close
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    yield figures
    for fig in figures:
        close(fig)


def summary(**over):
    return {"lr_bits": 8, "replays": 750, "strategy": "latent-replay", "recipe": "tinycl",
            "final_accuracy": 0.4321, "average_accuracy": 0.3, "frozen_arithmetic": "int8", **over}


def test_run_titles_tell_8_bit_from_4_bit_and_name_n_and_recipe():
    cfg = RunConfig()
    eight, four = run_title(cfg, summary()), run_title(cfg, summary(lr_bits=4))
    assert eight != four
    assert "750 x 8-bit LRs" in eight and "750 x 4-bit LRs" in four
    assert "latent-replay (recipe tinycl)" in eight and "LR layer 19" in eight and "w0.25 64 px" in eight
    assert "final 43.21 %" in eight and "synthetic-core50 nicv2_79, seed 0" in eight
    assert "1500 x FP32 LRs behind the INT8 stage" in run_title(cfg, summary(lr_bits=32, replays=1500))
    assert "750 x FP32 LRs," in run_title(cfg, summary(lr_bits=32, frozen_arithmetic="float"))
    assert "no replays, naive" in run_title(cfg, summary(strategy="naive", replays=0))
    cfg.train.sparse = "20=0.25"
    assert "sparse 20=0.25" in run_title(cfg, summary())


def test_accuracy_limits_follow_the_data():
    assert accuracy_limits([0.5, 9.0]) == pytest.approx((0.0, 10.2))  # low accuracies: from 0, not to 100
    lo, hi = accuracy_limits([61.0, 63.0])  # a flat curve still spans 5 points
    assert lo < 61 and hi > 63 and hi - lo == pytest.approx(6.0)
    assert accuracy_limits([97.0, 99.5])[1] == 100.0


def test_accuracy_plot_scales_y_and_ticks_whole_batches(tmp_path, kept_figures):
    plot_accuracy_curves({"latent-replay": ([0, 1, 2, 3, 4], [0.09, 0.083, 0.08, 0.08, 0.087])},
                         tmp_path / "accuracy.png", "title")
    (fig,) = kept_figures
    ax = fig.axes[0]
    assert ax.get_ylim()[1] < 15  # not 0-100 %
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 4]
    assert ticks == [int(t) for t in ticks] and len(ticks) >= 3  # no 0.5 batches
    assert (tmp_path / "accuracy.png").stat().st_size > 10_000


def test_memory_axis_ticks_are_plain_megabytes(kept_figures):
    for values in ([0.3, 0.45, 0.6, 0.9], [0.1, 24.6]):
        fig, ax = plt.subplots()
        ax.plot(values, values)
        memory_axis(ax, values)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all("10^" not in text and "times" not in text and "×" not in text for text in labels)
        for text in labels:
            float(text)  # a plain number
    assert "0.4" in labels or "0.5" in labels  # the wide range: 1-2-5 ticks below 1 MB too


def test_sweep_plot_and_table_show_one_seed_cells_without_a_spread(tmp_path, kept_figures):
    runs = [{"lr_layer": 19, "lr_bits": 8, "replays": n, "seed": s, "final_accuracy": 0.3 + 0.01 * s,
             "frozen_arithmetic": "int8", "lr_memory_bytes": n * 512} for n in (375, 750) for s in (0, 1)]
    runs.append({"lr_layer": 19, "lr_bits": 8, "replays": 1500, "seed": 0, "final_accuracy": 0.33,
                 "frozen_arithmetic": "int8", "lr_memory_bytes": 1500 * 512})
    table = cells(runs)
    text = markdown_table(table)
    assert "| 19 | 8 | 1500 | 768,000 | 33.00 ± n/a |" in text
    assert "| 19 | 8 | 375 | 192,000 | 30.50 ± 0.50 |" in text
    plot_accuracy_vs_memory(table, tmp_path / "accuracy_vs_memory.png", "QLR")
    (fig,) = kept_figures
    assert "1-2 seeds" in fig._suptitle.get_text()
    assert (tmp_path / "accuracy_vs_memory.png").stat().st_size > 10_000


def test_one_seed_std_is_not_zero():
    one = Cell(19, 8, 750, 1000, (0.5,))
    assert one.accuracy_text() == "50.00 ± n/a" and one.std != one.std  # NaN: unknown, not 0
    assert Cell(19, 8, 750, 1000, (0.5, 0.6)).accuracy_text() == "55.00 ± 5.00"


def test_memory_plot_is_scaled_to_the_bars_and_titled_with_the_total(tmp_path, kept_figures):
    from tinycl.device import CostConfig, estimate
    from tinycl.report.device_plots import plot_memory

    report = estimate(CostConfig(width=0.25, res=64, replays=100), ["vega"])
    total = report.memory.total_bytes / 1e6
    levels = {"l2": int(0.8 * report.memory.total_bytes), "external": 67_108_864}
    plot_memory([("r8", report)], tmp_path / "memory.png", levels, "Device memory of r8")
    (fig,) = kept_figures
    ax = fig.axes[0]
    assert total < ax.get_ylim()[1] < 1.3 * total  # not stretched to the 67 MB external RAM
    texts = [t.get_text() for t in ax.texts]
    assert f"{total:.2f} MB" in texts  # the total on the bar
    assert f"l2 {0.8 * total:.2f} MB" in texts  # a level within the axis is drawn
    assert "above the axis: external 67.1 MB" in texts  # one above it is named
    assert ax.get_title() == f"Device memory of r8\ntotal {total:.2f} MB"


def test_pareto_plot_has_a_title_and_labels_every_run(tmp_path, kept_figures):
    from tinycl.report.device_plots import ParetoPoint, plot_pareto

    points = [ParetoPoint("a", 2_000_000, 0.5), ParetoPoint("b", 3_000_000, 0.4), ParetoPoint("c", 4_000_000, 0.7)]
    plot_pareto(points, tmp_path / "pareto.png", "device memory on vega (MB)", "Final accuracy vs device memory")
    (fig,) = kept_figures
    ax = fig.axes[0]
    assert ax.get_title() == "Final accuracy vs device memory\n2 of 3 runs on the front"
    assert sorted(t.get_text() for t in ax.texts) == ["a", "b", "c"]
