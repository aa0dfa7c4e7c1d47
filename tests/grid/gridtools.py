"""Helpers of the grid tests: the CLI in-process, a tiny grid, what a run directory computed,
the processes and sockets of this test process's descendants, and a worker killer."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from clitools import cli  # noqa: F401 - the grid tests import it from here

# 3 runs of a few seconds each: Q 32 (float stage), 8 and 4 (INT8 stage), one seed.
GRID = ["--bits", "32,8,4", "--replays", "20", "--lr-layers", "19", "--seeds", "0", "--scenario", "nicv2_79",
        "--epochs", "1"]
RUNS = ["L19_Q32_N20_s0", "L19_Q8_N20_s0", "L19_Q4_N20_s0"]


def base_config(folder: Path, weights: Path) -> Path:
    """res 32, 2 frames per video, a random-init backbone: runs of seconds."""
    path = folder / "base.toml"
    path.write_text(f'[model]\nres = 32\nweights = "{weights}"\n[data]\nframes = 2\n')
    return path


def computed(run_dir: Path) -> dict:
    """What a run computed, wall times and its own path aside: summary, metrics, config, deployment."""
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("wall_seconds")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("wall_seconds_batch")
    config = [line for line in (run_dir / "config.toml").read_text().splitlines() if not line.startswith("out = ")]
    deployment = run_dir / "deployment.tcd"
    return {"summary": summary, "metrics": records, "config": config,
            "deployment": deployment.read_bytes() if deployment.exists() else None,
            "files": sorted(p.name for p in run_dir.iterdir())}


# ---------------------------------------------------------------- processes and sockets


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(root: int | None = None) -> list[int]:
    """``root`` (default: this process) and every process below it."""
    kids = children_map()
    todo, seen = [root or os.getpid()], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo += kids.get(pid, [])
    return seen


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _address(text: str, family: int) -> tuple[str, int]:
    hex_ip, hex_port = text.split(":")
    raw = bytes.fromhex(hex_ip)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, raw), int(hex_port, 16)


def inet_sockets() -> dict[str, tuple[str, str, tuple[str, int], tuple[str, int]]]:
    """inode -> (protocol, state, local address, remote address) of every TCP/UDP socket, IPv4 and 6."""
    found = {}
    for proto, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6), ("udp", socket.AF_INET),
                          ("udp6", socket.AF_INET6)):
        try:
            with open(f"/proc/net/{proto}") as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            state = "LISTEN" if proto.startswith("tcp") and fields[3] == "0A" else fields[3]
            found[fields[9]] = (proto, state, _address(fields[1], family), _address(fields[2], family))
    return found


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def is_loopback(host: str) -> bool:
    ip = ipaddress.ip_address(host)
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1, what a dual-stack socket shows
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_unspecified(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified


class Watcher(threading.Thread):
    """While a grid runs in this process: record every inet socket of this process and its
    descendants, and SIGKILL the first ``kills`` processes whose command line contains
    ``victim`` once they have lived ``delay_s`` (a cell is sent to a worker as it starts)."""

    def __init__(self, victim: str = "", kills: int = 0, delay_s: float = 0.0, sockets: bool = False):
        super().__init__(daemon=True)
        self.victim, self.kills, self.delay_s, self.watch_sockets = victim, kills, delay_s, sockets
        self.killed: list[int] = []
        self.first_seen: dict[int, float] = {}
        self.sockets: set[tuple] = set()  # (pid, command, protocol, state, local, remote)
        self.pids: dict[int, str] = {}
        self.done = threading.Event()

    def run(self) -> None:
        # Every 0.5 s: a cell runs for seconds and Ray's servers and connections live for the whole
        # grid, so nothing is missed, and the scan (every fd of every Ray process, in the driver's
        # own process) competes less with the grid under test.
        while not self.done.is_set():
            self.look()
            self.done.wait(0.5)

    def look(self) -> None:
        table = inet_sockets() if self.watch_sockets else {}
        now = time.monotonic()
        for pid in descendants():
            command = cmdline(pid)
            if not command:
                continue
            self.pids.setdefault(pid, command)
            if self.victim and self.victim in command and len(self.killed) < self.kills and pid not in self.killed:
                if now - self.first_seen.setdefault(pid, now) >= self.delay_s:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
            for inode in socket_inodes(pid):
                if inode in table:
                    self.sockets.add((pid, command[:300], *table[inode]))

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join(timeout=5)
