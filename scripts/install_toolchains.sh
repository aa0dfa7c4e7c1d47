#!/usr/bin/env bash
# Install the cross compilers and emulators that `tinycl export` and tests/export use:
#   arm-none-eabi-gcc        Cortex-M4F builds   (Debian package gcc-arm-none-eabi)
#   riscv64-unknown-elf-gcc  RV32IMFC builds     (gcc-riscv64-unknown-elf)
#   qemu-system-arm          runs mps2-an386     (qemu-system-arm)
#   qemu-system-riscv32      runs virt, rv32     (qemu-system-misc)
# The host build needs only gcc. No C library package is needed: the runtime ships its own
# startup files, linker scripts and semihosting calls (../shared/TOOLCHAINS.md).
#
# Idempotent: does nothing when every command is already on PATH (from any source). Otherwise
# installs the Debian packages with --no-install-recommends (about 150 MB download, ~40 s).
# Off Debian/Ubuntu it prints one line naming what to install and exits with code 2.
set -euo pipefail

PACKAGES=(gcc-arm-none-eabi gcc-riscv64-unknown-elf qemu-system-arm qemu-system-misc)
COMMANDS=(arm-none-eabi-gcc riscv64-unknown-elf-gcc qemu-system-arm qemu-system-riscv32)

missing_commands() {
    local cmd
    for cmd in "${COMMANDS[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || echo "$cmd"
    done
}

missing=$(missing_commands | tr '\n' ' ')
if [ -z "$missing" ]; then
    echo "install_toolchains: all present (${COMMANDS[*]}), nothing to do"
    exit 0
fi

os_family=""
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    os_family=$(. /etc/os-release && echo "${ID:-} ${ID_LIKE:-}")
fi
case " $os_family " in
    *" debian "* | *" ubuntu "*) ;;
    *)
        echo "install_toolchains: not Debian/Ubuntu; install ${missing% } yourself" \
             "(Debian packages: ${PACKAGES[*]})" >&2
        exit 2
        ;;
esac
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_toolchains: apt-get not found; install ${missing% } yourself (Debian packages: ${PACKAGES[*]})" >&2
    exit 2
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install_toolchains: needs root or sudo to install ${PACKAGES[*]}" >&2
        exit 2
    fi
    SUDO=(sudo)
fi

echo "install_toolchains: missing ${missing% }; installing ${PACKAGES[*]}"
"${SUDO[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"

still=$(missing_commands | tr '\n' ' ')
if [ -n "$still" ]; then
    echo "install_toolchains: installed the packages but ${still% } is still not on PATH" >&2
    exit 1
fi
for cmd in arm-none-eabi-gcc riscv64-unknown-elf-gcc qemu-system-arm qemu-system-riscv32; do
    echo "  $cmd: $("$cmd" --version | head -n 1)"
done
echo "install_toolchains: done"
