"""The three build targets of an exported project, and building and running one.

``host`` (gcc, native), ``cortex-m4`` (arm-none-eabi-gcc for a Cortex-M4F, run by QEMU's
``mps2-an386``) and ``rv32`` (riscv64-unknown-elf-gcc for RV32IMFC, run by QEMU's ``virt``):
compiler flags and QEMU command lines as verified in ../shared/TOOLCHAINS.md. Every target
compiles ``-std=c99 -ffp-contract=off``: without it ARM and RISC-V gcc fuse multiply-adds and
the FP32 adaptive stage drifts from the host. Bare-metal targets link no C library (own
startup file, linker script, semihosting) and ``-lgcc`` for 64-bit shift helpers.
``scripts/install_toolchains.sh`` installs the cross compilers and QEMU on Debian/Ubuntu.

On the QEMU targets a run can also count executed instructions: ``build_plugin`` compiles
the project's ``tools/tinycl_insn_count.c`` for the host and ``run_project(...,
count_instructions=True)`` loads it (``-plugin``); ``read_counts`` reads what it wrote.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinycl.errors import TinyclError

# -fno-math-errno: sqrt compiles to the FPU's instruction (vsqrt.f32, fsqrt.s, sqrtss; all
# correctly rounded, so every target gives the same bits) instead of a call to libm's sqrtf for
# errno's sake; bare-metal builds link no libm.
COMMON_CFLAGS = ("-std=c99", "-ffp-contract=off", "-fno-math-errno", "-O2", "-Wall", "-Wextra", "-Werror")
# Bare metal: GCC's own <stdint.h> without a C library needs -ffreestanding; unused kernels
# are dropped per function (-ffunction-sections, --gc-sections); baremetal_mem.c must not be
# turned into calls to itself (-fno-tree-loop-distribute-patterns).
BARE_METAL_CFLAGS = ("-ffreestanding", "-fno-tree-loop-distribute-patterns", "-ffunction-sections",
                     "-fdata-sections")
QEMU_COMMON = ("-nographic", "-monitor", "none", "-serial", "none", "-semihosting-config",
               "enable=on,target=native")
RAM_OVERFLOW = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")
INSTALL_SCRIPT = "scripts/install_toolchains.sh"
# The QEMU instruction-counting plugin is a host shared library (TOOLCHAINS.md: gcc -O2 -shared
# -fPIC -fvisibility=hidden); it reads no QEMU header, so any host gcc builds it.
HOST_CC = "gcc"
PLUGIN_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden")
PLUGIN_FILE = "build/tinycl_insn_count.so"
MARK_SYMBOL = "tinycl_region_mark"
# Both linker scripts (runtime/harness/*.ld) reserve this much RAM for the stack by default.
STACK_BYTES = 16 * 1024
MIB = 1024 * 1024


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
    ram_bytes: int = 0  # RAM for static buffers, .data and the stack (0: not checked, the host)
    flash_bytes: int = 0  # read-only memory for code and constants (0: they share the RAM)
    ext_ram_bytes: int = 0  # external RAM (linker region EXTRAM, section .tinycl_ext) for large buffers

    @property
    def cflags(self) -> tuple[str, ...]:
        return (*COMMON_CFLAGS, *self.arch_flags, *self.extra_cflags)

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.compiler, "make", *self.emulator[:1])

    @property
    def output_file(self) -> str:
        return f"tinycl_out_{self.name}.bin"

    @property
    def counts_file(self) -> str:
        """Where the instruction-counting plugin writes (relative to the project root)."""
        return f"build/{self.name}/tinycl_insns.txt"

    def run_argv(self, plugin: str | None = None) -> list[str]:
        """The command line that runs the built program; ``plugin``: QEMU's ``-plugin`` value."""
        if not self.emulator:
            return [f"./{self.binary}"]
        return [*self.emulator, *(("-plugin", plugin) if plugin else ()), "-kernel", self.binary]

    def tool_prefix(self) -> str:
        """``arm-none-eabi-`` etc., for ``size`` and ``nm`` of the same binutils."""
        return self.compiler[: -len("gcc")] if self.compiler.endswith("gcc") else ""


TARGETS: dict[str, Target] = {
    "host": Target(
        "host", "the host, native", HOST_CC, (), (), ("main.c", "platform_host.c", "region_mark.c"), (), (),
        "build/host/tinycl", ()),
    "cortex-m4": Target(
        "cortex-m4", "Cortex-M4F (QEMU mps2-an386)", "arm-none-eabi-gcc",
        ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), BARE_METAL_CFLAGS,
        ("main.c", "platform_semihost.c", "baremetal_mem.c", "region_mark.c", "startup_cortex_m4.S"),
        ("-nostdlib", "-nostartfiles", "-T", "harness/cortex_m4.ld", "-Wl,--gc-sections",
         "-Wl,-Map=build/cortex-m4/tinycl.map"),
        ("-lgcc",), "build/cortex-m4/tinycl.elf", ("qemu-system-arm", "-M", "mps2-an386", *QEMU_COMMON),
        # runtime/harness/cortex_m4.ld: AN386's 4 MB SSRAM at 0x0 (code, constants) and 4 MB at 0x20000000
        ram_bytes=4 * MIB, flash_bytes=4 * MIB,
        # cortex_m4.ld EXTRAM: AN386's 16 MB PSRAM at 0x21000000 (what --train keeps per mini-batch)
        ext_ram_bytes=16 * MIB),
    "rv32": Target(
        "rv32", "RV32IMFC (QEMU virt)", "riscv64-unknown-elf-gcc",
        ("-march=rv32imfc", "-mabi=ilp32f"), BARE_METAL_CFLAGS,
        ("main.c", "platform_semihost.c", "baremetal_mem.c", "region_mark.c", "startup_rv32.S"),
        # one RAM region holds code and data on virt, so the segment is RWX by design
        ("-nostdlib", "-nostartfiles", "-T", "harness/rv32.ld", "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments",
         "-Wl,-Map=build/rv32/tinycl.map"),
        ("-lgcc",), "build/rv32/tinycl.elf",
        ("qemu-system-riscv32", "-M", "virt", "-cpu", "rv32,a=off,d=off", "-bios", "none", *QEMU_COMMON),
        # runtime/harness/rv32.ld: one 8 MB region for everything, and 16 MB above it as EXTRAM
        ram_bytes=8 * MIB, ext_ram_bytes=16 * MIB),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise TinyclError(f"unknown export target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name]


def missing_tools(target: str) -> list[str]:
    """Commands the target needs that are not on PATH (``scripts/install_toolchains.sh``)."""
    return [tool for tool in get_target(target).tools if shutil.which(tool) is None]


def require_tools(target: str, extra: tuple[str, ...] = ()) -> None:
    """One ``TinyclError`` line naming what is missing and the script that installs it."""
    missing = missing_tools(target) + [tool for tool in extra if shutil.which(tool) is None]
    if missing:
        raise TinyclError(f"cannot build for {target}: {', '.join(dict.fromkeys(missing))} not found; "
                          f"run {INSTALL_SCRIPT} (Debian/Ubuntu) or put them on PATH")


def check_fits(buffers: dict[str, int], constants: dict[str, int], target: str,
               external: dict[str, int] | None = None) -> dict[str, int]:
    """Refuse, in one line and before any build, a project whose static memory exceeds the
    target's: static buffers + the stack against RAM, constants against flash (or, where one
    region holds everything, all of it against RAM), ``external`` buffers against the external
    RAM. Code is not counted here (it is known only after linking; the linker's own "region
    overflowed" check catches the rest). Returns the bytes needed per region."""
    spec = get_target(target)
    if not spec.ram_bytes:
        return {}
    external = external or {}
    ram = sum(buffers.values()) + STACK_BYTES
    flash = sum(constants.values())
    needs = {"ram": ram, "flash": flash} if spec.flash_bytes else {"ram": ram + flash}
    if external:
        needs["external ram"] = sum(external.values())
    for region, need in needs.items():
        have = {"ram": spec.ram_bytes, "flash": spec.flash_bytes, "external ram": spec.ext_ram_bytes}[region]
        if need > have:
            what = {"ram": "static buffers and stack" if spec.flash_bytes else "static buffers, constants and stack",
                    "flash": "constants", "external ram": "large training buffers"}[region]
            pool = external if region == "external ram" else buffers if region == "ram" and spec.flash_bytes \
                else constants if region == "flash" else {**buffers, **constants}
            largest = max(pool, key=pool.get)
            raise TinyclError(f"the exported model does not fit {spec.description}: its {what} need {need:,} bytes "
                              f"of {region.upper()}, {need - have:,} bytes more than the {have:,} there "
                              f"(largest: {largest}, {pool[largest]:,} bytes)")
    return needs


def build_project(root: Path, target: str, timeout_s: float = 600) -> Path:
    """``make -f Makefile.<target>`` in ``root``; returns the binary's path.

    A configuration whose static buffers do not fit the target's memory is the user's to fix:
    one ``TinyclError`` line with the overflow. Any other failure is a tinycl bug: a
    ``RuntimeError`` with the compiler's output.
    """
    spec = get_target(target)
    require_tools(target)
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


def build_plugin(root: Path, timeout_s: float = 120) -> Path:
    """Compile the project's instruction-counting QEMU plugin for the host; returns its path."""
    require_tools("host")
    out = Path(root) / PLUGIN_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([HOST_CC, *PLUGIN_CFLAGS, "tools/tinycl_insn_count.c", "-o", PLUGIN_FILE], cwd=root,
                            capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"cannot build the instruction-counting plugin in {root}:\n{result.stderr[-4000:]}")
    return out


def mark_address(root: Path, target: str) -> int:
    """Address of ``tinycl_region_mark`` in the built binary (the Thumb bit cleared: QEMU's
    block addresses are instruction addresses)."""
    spec = get_target(target)
    lines = subprocess.run([f"{spec.tool_prefix()}nm", spec.binary], cwd=root, capture_output=True, text=True,
                           check=True).stdout
    for line in lines.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == MARK_SYMBOL:
            return int(parts[0], 16) & ~1
    raise RuntimeError(f"{spec.binary} has no {MARK_SYMBOL}: built with -DTINYCL_NO_REGION_MARKS?")


def run_binary(root: Path, target: str, timeout_s: float = 120, count_instructions: bool = False
               ) -> subprocess.CompletedProcess:
    """Run the built program in ``root`` (natively or under QEMU); its status is main's return.
    ``count_instructions`` (QEMU targets): load the plugin built by ``build_plugin``; it writes
    ``target.counts_file``."""
    spec = get_target(target)
    plugin = None
    if count_instructions:
        if not spec.emulator:
            raise TinyclError(f"instruction counts need a QEMU target, not {target}")
        (Path(root) / spec.counts_file).unlink(missing_ok=True)
        plugin = f"{PLUGIN_FILE},mark={mark_address(root, target):#x},out={spec.counts_file}"
    try:
        result = subprocess.run(spec.run_argv(plugin), cwd=root, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{target} run did not finish within {timeout_s:g} s") from None
    if result.returncode != 0:
        raise RuntimeError(f"{target} run exited with status {result.returncode}:\n{result.stdout}{result.stderr}")
    return result


def run_project(root: Path, target: str, frames: np.ndarray, timeout_s: float = 120,
                count_instructions: bool = False):
    """Write ``frames`` (uint8 [N, H, W, C]) as the input file, run, and read the outputs back
    (``count_instructions``: see ``run_binary``; ``read_counts`` reads the counts)."""
    from tinycl.export.verify import read_output_file, write_input_file

    root = Path(root)
    spec = get_target(target)
    write_input_file(root / "tinycl_in.bin", frames)
    output = root / spec.output_file
    output.unlink(missing_ok=True)
    result = run_binary(root, target, timeout_s, count_instructions)
    outputs = read_output_file(output)
    outputs.console = result.stdout + result.stderr  # QEMU writes semihosting text to stderr
    return outputs


def read_counts(root: Path, target: str) -> tuple[int, np.ndarray]:
    """(instructions executed in total, instruction count before each region mark) of the last
    counting run."""
    path = Path(root) / get_target(target).counts_file
    try:
        lines = path.read_text().split("\n")
    except FileNotFoundError:
        raise RuntimeError(f"{path} is missing: the counting plugin did not write") from None
    if lines[0] != "tinycl-insn-count 1" or not lines[1].startswith("total ") or not lines[2].startswith("marks "):
        raise RuntimeError(f"{path} is not a tinycl_insn_count file")
    count = int(lines[2].split()[1])
    marks = np.array([int(v) for v in lines[3 : 3 + count]], np.int64)
    if len(marks) != count:
        raise RuntimeError(f"{path} holds {len(marks)} of its {count} marks")
    return int(lines[1].split()[1]), marks


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
