"""The device half: a finished run as a C99 project for an MCU, and its verification.

``Deployment`` (``make_deployment``, ``save_deployment``, ``load_deployment``) holds what the
device computes with; ``write_project`` writes it as C (runtime kernels shipped in
``runtime/``, each with its Python reference in ``reference``); ``toolchains`` builds and runs
it on the host or under QEMU (Cortex-M4F, RV32); ``verify`` compares its outputs with Python;
``measure`` sets the built program's static memory and counted instructions beside the cost
model; ``driver.export_run`` is ``tinycl export`` without the command line.
"""

from tinycl.export.deployment import Deployment, load_deployment, lower_adaptive, make_deployment, save_deployment
from tinycl.export.generate import ExportedProject, Region, generate_project, write_project
from tinycl.export.toolchains import TARGETS, build_project, missing_tools, run_project
from tinycl.export.verify import Outputs, compare_outputs, reference_outputs

__all__ = [
    "TARGETS",
    "Deployment",
    "ExportedProject",
    "Outputs",
    "Region",
    "build_project",
    "compare_outputs",
    "generate_project",
    "load_deployment",
    "lower_adaptive",
    "make_deployment",
    "missing_tools",
    "reference_outputs",
    "run_project",
    "save_deployment",
    "write_project",
]
