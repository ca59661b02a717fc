"""`posemb serve --status`: the running server's status (server/loop.py, Server.status) as lines or JSON."""

from __future__ import annotations

from typing import Any

from ..output import Output
from .listing import human_size


def print_status(out: Output, info: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        out.json(info)
        return
    running = info["requests_running"]
    lines = [
        f"posemb server {info['version']}, pid {info['pid']}, up {_duration(info['uptime_seconds'])}",
        f"socket    {info['socket']}",
        f"log       {info['log']}",
        f"requests  {info['requests_served']} served, {len(running)} running",
        f"memory    {human_size(info['memory_bytes'])} resident",
        f"models    {len(info['models'])} of at most {info['max_models']} kept (least recently used first)",
    ]
    lines += [f"  {m['name']}  {m['device']}  {human_size(m['memory_bytes'])}  {m['folder']}" for m in info["models"]]
    lines += [f"  running pid {r['pid']} for {_duration(r['seconds'])}: posemb {' '.join(r['argv'])}" for r in running]
    timeout = info["idle_timeout_seconds"]
    lines.append(
        f"idle      stops after {_duration(timeout)} without a request (idle for {_duration(info['idle_seconds'])})"
        if timeout
        else "idle      never stops on its own"
    )
    out.data("\n".join(lines) + "\n")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
