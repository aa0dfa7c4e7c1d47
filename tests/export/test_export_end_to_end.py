"""A tiny MobileNetV1 exported and run on the host, Cortex-M4F and RV32 (QEMU): LR codes and
packed bytes bit-identical to Python, logits within 1e-5 relative, identical predictions, and
the same logits bits on every target (the runtime is compiled -ffp-contract=off)."""

from dataclasses import replace

import numpy as np
import pytest

from tinycl.errors import TinyclError
from tinycl.export import (
    build_project,
    compare_outputs,
    reference_outputs,
    run_project,
    write_project,
)
from tinycl.export.toolchains import elf_sections, elf_symbols


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_deployment):
    """Q = 6 bits, clip mode per channel, 4 replay rows: the most involved latent path."""
    dep, adaptive, frames = tiny_deployment(6, "clip", True, replays=4)
    project = write_project(dep, tmp_path_factory.mktemp("export"))
    want = reference_outputs(dep, frames, adaptive)  # the trained module itself, eval mode
    assert compare_outputs(want, reference_outputs(dep, frames))["ok"]  # the lowered ops agree
    assert np.unique(want.codes).size > 30 and len(set(want.predictions.tolist())) > 1  # not trivial
    return dep, project, frames, want


@pytest.fixture(scope="module")
def host_outputs(exported, require_toolchain):
    _, project, frames, _ = exported
    require_toolchain("host")
    build_project(project.root, "host")
    return run_project(project.root, "host", frames)


def test_project_layout_and_sizes(exported):
    dep, project, _, _ = exported
    root = project.root
    for name in ("tinycl_model.h", "tinycl_model.c", "tinycl_model_data.c", "Makefile.host", "Makefile.cortex-m4",
                 "Makefile.rv32", "runtime/conv2d_s8.c", "runtime/tinycl_runtime.h", "harness/main.c",
                 "harness/cortex_m4.ld", "harness/startup_rv32.S"):
        assert (root / name).is_file(), name
    header = (root / "tinycl_model.h").read_text()
    assert "#define TINYCL_LR_VALUES 512" in header  # 128 channels x 2 x 2 at 32 px
    assert "#define TINYCL_LR_ROW_BYTES 384" in header  # 512 x 6 bits / 8
    assert dep.latent_shape == (128, 2, 2) and dep.row_bytes == 384
    assert dep.input_shape == (3, 32, 32) and project.buffers["tinycl_input_s8"] == 3 * 32 * 32
    # ping-pong buffers: even layers' outputs (largest: layer 2, 16 x 16 x 16) and odd ones'
    # (largest: layer 1, 8 x 16 x 16)
    assert project.buffers["tinycl_frozen_act0"] == 16 * 16 * 16
    assert project.buffers["tinycl_frozen_act1"] == 8 * 16 * 16
    assert "-ffp-contract=off" in (root / "Makefile.rv32").read_text()


def test_host(exported, host_outputs):
    _, _, _, want = exported
    verdict = compare_outputs(want, host_outputs)
    assert verdict["ok"], verdict
    assert "24 frames, 4 replay rows" in host_outputs.console


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
def test_qemu_target(exported, host_outputs, require_toolchain, target):
    _, project, frames, want = exported
    require_toolchain(target)
    build_project(project.root, target)
    got = run_project(project.root, target, frames)
    verdict = compare_outputs(want, got)
    assert verdict["ok"], verdict
    assert "24 frames, 4 replay rows" in got.console
    # the same bits as the host: no fused multiply-add, same operation order
    assert got.logits.tobytes() == host_outputs.logits.tobytes()
    assert got.replay_logits.tobytes() == host_outputs.replay_logits.tobytes()
    sections = elf_sections(project.root, target)
    assert sections["bss"] >= sum(project.buffers.values())  # plus the stack
    symbols = elf_symbols(project.root, target)
    for name, size in project.buffers.items():
        assert symbols[name][0] == size, name  # every static buffer, sized by the generator
    assert symbols["tinycl_frozen0_weight"][0] == project.constants["tinycl_frozen0_weight"]


def test_host_shift_mode_without_replays(tmp_path, require_toolchain, tiny_deployment):
    require_toolchain("host")
    dep, adaptive, frames = tiny_deployment(7, "shift", False, replays=0, seed=3)
    project = write_project(dep, tmp_path)
    build_project(project.root, "host")
    verdict = compare_outputs(reference_outputs(dep, frames, adaptive), run_project(project.root, "host", frames))
    assert verdict["ok"] and verdict["replay_rows"] == 0, verdict


def test_too_big_for_the_target_is_one_line(exported, tmp_path, require_toolchain):
    """A 1200 x 1200 input needs ~13 MB of activation buffers: the build is refused with the
    overflow, in one line."""
    require_toolchain("cortex-m4")
    dep, _, _, _ = exported
    big = replace(dep, input_shape=(3, 1200, 1200), replay_rows=None, replay_labels=None).validate()
    project = write_project(big, tmp_path)
    with pytest.raises(TinyclError, match=r"does not fit Cortex-M4F .*overflowed by [\d,]+ bytes") as info:
        build_project(project.root, "cortex-m4")
    assert "\n" not in str(info.value)


FAULTING_MAIN = """
#include "tinycl_platform.h"
int main(void)
{
#ifdef __riscv
    __asm__ volatile(".word 0x00000000"); /* an illegal instruction */
#else
    __asm__ volatile("udf #0"); /* a permanently undefined instruction */
#endif
    platform_print("not reached\\n");
    return 0;
}
"""


@pytest.mark.parametrize("target", ["cortex-m4", "rv32"])
def test_cpu_fault_ends_the_run_with_status_3(tmp_path, require_toolchain, target):
    """The startup files route every exception to a semihosting exit: a fault never hangs QEMU."""
    import shutil
    import subprocess

    from tinycl.export.generate import RUNTIME_DIR
    from tinycl.export.toolchains import TARGETS

    require_toolchain(target)
    spec = TARGETS[target]
    shutil.copytree(RUNTIME_DIR / "harness", tmp_path / "harness")
    (tmp_path / "fault.c").write_text(FAULTING_MAIN)
    (tmp_path / spec.binary).parent.mkdir(parents=True)
    sources = ["fault.c", *(f"harness/{name}" for name in spec.harness if name != "main.c")]
    subprocess.run([spec.compiler, *spec.cflags, "-Iharness", *sources, *spec.ldflags, *spec.libs, "-o", spec.binary],
                   cwd=tmp_path, check=True, capture_output=True)
    result = subprocess.run(spec.run_argv(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "CPU fault" in result.stderr and "not reached" not in result.stderr
