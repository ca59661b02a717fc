"""Every `$ ` command in the README's console blocks runs, and its shown output is what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NUMBER = re.compile(r"-?\d+\.\d+")


def _examples() -> list[tuple[str, list[str]]]:
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples and line.strip() and not block.startswith("make"):
                examples[-1][1].append(line.rstrip())
    return [(cmd, out) for cmd, out in examples if not cmd.startswith("make")]


def _same(expected: str, actual: str) -> bool:
    if NUMBER.sub("#", expected) != NUMBER.sub("#", actual):
        return False
    pairs = zip(NUMBER.findall(expected), NUMBER.findall(actual), strict=True)
    return all(abs(float(a) - float(b)) <= 2e-3 for a, b in pairs)


def test_readme_has_examples():
    commands = [cmd for cmd, _ in _examples()]
    assert any(cmd.startswith("posemb inspect") for cmd in commands)
    assert any(cmd.startswith("posemb models") for cmd in commands)


@pytest.mark.parametrize("command, expected", _examples(), ids=[cmd[:60] for cmd, _ in _examples()])
def test_readme_example(command, expected, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", COLUMNS="120")
    if command.startswith("python -c") and "arrays.npz" in command:
        subprocess.run("posemb inspect 'position matters' --save arrays.npz", shell=True, cwd=tmp_path, env=env)
    proc = subprocess.run(
        f"{command} 2>&1", shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout
    assert "Traceback" not in proc.stdout
    actual = [line.rstrip() for line in proc.stdout.splitlines() if line.strip()]
    for want, got in zip(expected, actual[: len(expected)], strict=False):
        assert _same(want, got), f"README shows:\n{want}\nposemb printed:\n{got}"
    assert len(actual) >= len(expected)


def test_every_command_has_help_and_a_readme_section():
    from posemb_cli.cli import app

    text = README.read_text(encoding="utf-8")
    names = [command.name or command.callback.__name__ for command in app.registered_commands]
    assert sorted(names) == ["compare", "inspect", "models", "positions", "stats"]
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert (command.callback.__doc__ or "").strip(), f"{name} has no help text"
        assert f"### `posemb {name}`" in text, f"README has no section for posemb {name}"
