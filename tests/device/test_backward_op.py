"""The description of a backward op lives with the cost model that prices it (issue 18, item 6)."""

import ast
from pathlib import Path

import tinycl
from tinycl.device.backward import BackwardOp

PACKAGE = Path(tinycl.__file__).parent


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def test_reports_and_the_device_model_never_import_training():
    for folder in ("report", "device"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            upward = [m for m in imported_modules(path) if m == "tinycl.train" or m.startswith("tinycl.train.")]
            assert not upward, f"{path.relative_to(PACKAGE)} imports {upward}"


def test_training_and_the_report_share_one_backward_op():
    from tinycl.report.sparse_table import op_cost
    from tinycl.train import sparse

    assert sparse.BackwardOp is BackwardOp
    op = BackwardOp("conv", (8, 4, 4), (16, 4, 4), kernel_hw=(1, 1), channels=8, chosen=2, input_grad=False)
    cost = op_cost(op)  # 1x1 conv: 16 * 16 positions * 8 inputs = 2048 weight-gradient MACs, a quarter kept
    assert (cost.weight_grad_macs, cost.input_grad_macs, cost.kept_bytes) == (512, 0, 4 * 128 * 2 // 8)
