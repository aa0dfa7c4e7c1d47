"""The three build targets of an exported project, and building and running one.

``host`` (gcc, native), ``cortex-m4`` (arm-none-eabi-gcc for a Cortex-M4F, run by QEMU's
``mps2-an386``) and ``rv32`` (riscv64-unknown-elf-gcc for RV32IMFC, run by QEMU's ``virt``):
compiler flags and QEMU command lines as verified in ../shared/TOOLCHAINS.md. Every target
compiles ``-std=c99 -ffp-contract=off``: without it ARM and RISC-V gcc fuse multiply-adds and
the FP32 adaptive stage drifts from the host. Bare-metal targets link no C library (own
startup file, linker script, semihosting) and ``-lgcc`` for 64-bit shift helpers.
``scripts/install_toolchains.sh`` installs the cross compilers and QEMU on Debian/Ubuntu.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.errors import TinyclError

COMMON_CFLAGS = ("-std=c99", "-ffp-contract=off", "-O2", "-Wall", "-Wextra", "-Werror")
# Bare metal: GCC's own <stdint.h> without a C library needs -ffreestanding; unused kernels
# are dropped per function (-ffunction-sections, --gc-sections); baremetal_mem.c must not be
# turned into calls to itself (-fno-tree-loop-distribute-patterns).
BARE_METAL_CFLAGS = ("-ffreestanding", "-fno-tree-loop-distribute-patterns", "-ffunction-sections",
                     "-fdata-sections")
QEMU_COMMON = ("-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config",
               "enable=on,target=native")
RAM_OVERFLOW = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")


@dataclass(frozen=True)
class Target:
    """How to build and run the exported project on one target."""

    name: str
    description: str
    compiler: str
    arch_flags: tuple[str, ...]
    extra_cflags: tuple[str, ...]
    harness: tuple[str, ...]  # files of runtime/harness compiled in
    ldflags: tuple[str, ...]
    libs: tuple[str, ...]
    binary: str  # relative to the project root
    emulator: tuple[str, ...]  # argv before the binary; () runs it natively

    @property
    def cflags(self) -> tuple[str, ...]:
        return (*COMMON_CFLAGS, *self.arch_flags, *self.extra_cflags)

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.compiler, "make", *self.emulator[:1])

    @property
    def output_file(self) -> str:
        return f"tinycl_out_{self.name}.bin"

    def run_argv(self) -> list[str]:
        return [*self.emulator, "-kernel", self.binary] if self.emulator else [f"./{self.binary}"]

    def tool_prefix(self) -> str:
        """``arm-none-eabi-`` etc., for ``size`` and ``nm`` of the same binutils."""
        return self.compiler[: -len("gcc")] if self.compiler.endswith("gcc") else ""


TARGETS: dict[str, Target] = {
    "host": Target(
        "host", "the host, native", "gcc", (), (), ("main.c", "platform_host.c"), (), (),
        "build/host/tinycl", ()),
    "cortex-m4": Target(
        "cortex-m4", "Cortex-M4F (QEMU mps2-an386)", "arm-none-eabi-gcc",
        ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), BARE_METAL_CFLAGS,
        ("main.c", "platform_semihost.c", "baremetal_mem.c", "startup_cortex_m4.S"),
        ("-nostdlib", "-nostartfiles", "-T", "harness/cortex_m4.ld", "-Wl,--gc-sections",
         "-Wl,-Map=build/cortex-m4/tinycl.map"),
        ("-lgcc",), "build/cortex-m4/tinycl.elf", ("qemu-system-arm", "-M", "mps2-an386", *QEMU_COMMON)),
    "rv32": Target(
        "rv32", "RV32IMFC (QEMU virt)", "riscv64-unknown-elf-gcc",
        ("-march=rv32imfc", "-mabi=ilp32f"), BARE_METAL_CFLAGS,
        ("main.c", "platform_semihost.c", "baremetal_mem.c", "startup_rv32.S"),
        # one RAM region holds code and data on virt, so the segment is RWX by design
        ("-nostdlib", "-nostartfiles", "-T", "harness/rv32.ld", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments",
         "-Wl,-Map=build/rv32/tinycl.map"),
        ("-lgcc",), "build/rv32/tinycl.elf",
        ("qemu-system-riscv32", "-M", "virt", "-cpu", "rv32,a=off,d=off", "-bios", "none", *QEMU_COMMON)),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise TinyclError(f"unknown export target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def missing_tools(target: str) -> list[str]:
    """Commands the target needs that are not on PATH (``scripts/install_toolchains.sh``)."""
    return [tool for tool in get_target(target).tools if shutil.which(tool) is None]


def build_project(root: Path, target: str, timeout_s: float = 600) -> Path:
    """``make -f Makefile.<target>`` in ``root``; returns the binary's path.

    A configuration whose static buffers do not fit the target's memory is the user's to fix:
    one ``TinyclError`` line with the overflow. Any other failure is a tinycl bug: a
    ``RuntimeError`` with the compiler's output.
    """
    spec = get_target(target)
    missing = missing_tools(target)
    if missing:
        raise TinyclError(f"cannot build for {target}: {', '.join(missing)} not found (scripts/install_toolchains.sh)")
    try:
        result = subprocess.run(["make", "--no-print-directory", "-f", f"Makefile.{target}"], cwd=root,
                                capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{target} build did not finish within {timeout_s:g} s") from None
    if result.returncode != 0:
        overflow = RAM_OVERFLOW.search(result.stderr)
        if overflow:
            raise TinyclError(f"the exported model does not fit {spec.description}: region {overflow.group(1)} "
                              f"overflowed by {int(overflow.group(2)):,} bytes")
        raise RuntimeError(f"{target} build failed in {root}:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return Path(root) / spec.binary


def run_binary(root: Path, target: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run the built program in ``root`` (natively or under QEMU); its status is main's return."""
    spec = get_target(target)
    try:
        result = subprocess.run(spec.run_argv(), cwd=root, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{target} run did not finish within {timeout_s:g} s") from None
    if result.returncode != 0:
        raise RuntimeError(f"{target} run exited with status {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def run_project(root: Path, target: str, frames: np.ndarray, timeout_s: float = 120):
    """Write ``frames`` (uint8 [N, H, W, C]) as the input file, run, and read the outputs back."""
    from tinycl.export.verify import read_output_file, write_input_file

    root = Path(root)
    spec = get_target(target)
    write_input_file(root / "tinycl_in.bin", frames)
    output = root / spec.output_file
    output.unlink(missing_ok=True)
    result = run_binary(root, target, timeout_s)
    outputs = read_output_file(output)
    outputs.console = result.stdout + result.stderr  # QEMU writes semihosting text to stderr
    return outputs


def elf_sections(root: Path, target: str) -> dict[str, int]:
    """Berkeley ``size`` of the built binary: bytes of text (code + constants), data and bss."""
    spec = get_target(target)
    size = f"{spec.tool_prefix()}size"
    lines = subprocess.run([size, spec.binary], cwd=root, capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(v) for v in lines.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss}


def elf_symbols(root: Path, target: str) -> dict[str, tuple[int, str]]:
    """Sized data symbols of the built binary: name -> (bytes, nm type), e.g. buffers (b) and
    constants (r); the start of a per-buffer static memory report."""
    spec = get_target(target)
    nm = f"{spec.tool_prefix()}nm"
    lines = subprocess.run([nm, "-S", "--size-sort", spec.binary], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    symbols = {}
    for line in lines.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lower() in "bdr":
            symbols[parts[3]] = (int(parts[1], 16), parts[2])
    return symbols
