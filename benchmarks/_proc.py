"""CPU and memory accounting from /proc, shared by the benchmarks (Linux; None elsewhere)."""

from __future__ import annotations

import os

__all__ = ["CLOCK_TICKS", "group_cpu_s", "group_rss_bytes", "machine_busy_s"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def machine_busy_s() -> float | None:
    """CPU seconds all CPUs spent busy since boot (not idle, not waiting for I/O)."""
    try:
        with open("/proc/stat") as file:
            values = [int(v) for v in file.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _group_stats(pgid: int) -> list[list[str]] | None:
    """The /proc/PID/stat fields (after the command name) of the live processes of process
    group `pgid`; None without /proc."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return None
    found = []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as file:
                data = file.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # pgrp
            found.append(fields)
    return found


def group_cpu_s(pgid: int) -> float | None:
    """CPU seconds (user + system, all threads) used so far by the live processes of the
    process group `pgid`; None without /proc."""
    stats = _group_stats(pgid)
    if stats is None:
        return None
    return sum(int(f[11]) + int(f[12]) for f in stats) / CLOCK_TICKS  # utime, stime


def group_rss_bytes(pgid: int) -> int | None:
    """Resident bytes of the live processes of process group `pgid`; None without /proc."""
    stats = _group_stats(pgid)
    if stats is None:
        return None
    return sum(int(f[21]) for f in stats) * PAGE_SIZE  # rss in pages
