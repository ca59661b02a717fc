"""Every `$ ` command in the console blocks of README.md and of the pages in docs/ runs, and its shown output is what it
prints; every command of the app has a page.

A plain `posemb ...` example runs in-process (conftest.run_cli, stdout and stderr together as with `2>&1`, COLUMNS=120
as in a pipe), and so does `posemb ... | head -c N` (or `-n N`): its stdout, cut as head cuts it (what a closed pipe
does to posemb is tested with real pipes in test_cli and test_io_limits). One with any other pipe, a redirection or
another program (`printf ... |`, `| wc`, `python -c`) runs in a real shell. A command shown on several pages runs once
and must print what each page shows."""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
NUMBER = re.compile(r"-?\d+\.\d+")


# Pages whose examples need files made first run in their own test: docs/extrapolate.md builds its example model
# (tests/test_extrapolate.py::test_doc_examples).
OWN_RUNNER = {"extrapolate.md"}


def _pages() -> list[Path]:
    return [README, *(page for page in sorted(DOCS.glob("*.md")) if page.name not in OWN_RUNNER)]


def _page_examples(page: Path) -> list[tuple[str, list[str]]]:
    """The `$ ` commands of one page's console blocks, each with the output lines shown under it."""
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples and line.strip() and not block.startswith("make"):
                examples[-1][1].append(line.rstrip())
    return [(cmd, out) for cmd, out in examples if not cmd.startswith("make")]


def _shown() -> dict[str, list[tuple[str, list[str]]]]:
    """Each distinct command -> (page name, shown output) for every page that shows it."""
    shown: dict[str, list[tuple[str, list[str]]]] = {}
    for page in _pages():
        for cmd, out in _page_examples(page):
            shown.setdefault(cmd, []).append((str(page.relative_to(ROOT)), out))
    return shown


def _examples() -> list[tuple[str, list[str]]]:
    """Each distinct command once, with the longest output a page shows for it (the others must be its beginning:
    test_a_command_shown_twice_shows_the_same_output)."""
    return [(cmd, max((out for _, out in pages), key=len)) for cmd, pages in _shown().items()]


def test_a_command_shown_twice_shows_the_same_output():
    for cmd, pages in _shown().items():
        longest = max((out for _, out in pages), key=len)
        for page, out in pages:
            assert all(_same(a, b) for a, b in zip(out, longest, strict=False)), f"{page} shows other output for: {cmd}"


def _same(expected: str, actual: str) -> bool:
    if NUMBER.sub("#", expected) != NUMBER.sub("#", actual):
        return False
    pairs = zip(NUMBER.findall(expected), NUMBER.findall(actual), strict=True)
    return all(abs(float(a) - float(b)) <= 2e-3 for a, b in pairs)


def test_readme_has_examples():
    commands = [cmd for cmd, _ in _page_examples(README)]
    assert any(cmd.startswith("posemb inspect") for cmd in commands)
    assert len(_examples()) >= 25  # the pages' examples are found too


HEAD = re.compile(r"^(posemb [^|<>;&$`]*) \| head -([cn]) (\d+)$")


def _head_cut(command: str) -> tuple[list[str], str, int] | None:
    """`posemb ARGS | head -c N` (or -n N): (ARGS, "c" or "n", N); None for any other command."""
    match = HEAD.match(command)
    return (shlex.split(match[1])[1:], match[2], int(match[3])) if match else None


def _in_process(command: str) -> list[str] | None:
    """The arguments of a plain `posemb ...` command; None when it needs a shell (pipe, redirection, other program)."""
    if not command.startswith("posemb ") or any(c in command for c in "|<>;&$`"):
        return None
    return shlex.split(command)[1:]


def _shell(command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The command in a real shell, as a reader types it (posemb on PATH, COLUMNS=120), stderr into stdout."""
    import tempfile

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", COLUMNS="120")
    with tempfile.TemporaryDirectory() as folder:
        return subprocess.run(
            f"{command} 2>&1", shell=True, cwd=cwd or folder, env=env, capture_output=True, text=True, timeout=300
        )


def _params() -> list:
    """Pipes into posemb and out of it run in the background from the session start (conftest: `early`)."""
    params = []
    for command, expected in _examples():
        piped = (
            _in_process(command) is None and _head_cut(command) is None and command.startswith(("posemb ", "printf "))
        )
        marks = [pytest.mark.early(job=functools.partial(_shell, command))] if piped else []
        params.append(pytest.param(command, expected, marks=marks, id=command[:60]))
    return params


def test_shell_examples_are_only_the_piped_ones():
    shell = [cmd for cmd, _ in _examples() if _in_process(cmd) is None and _head_cut(cmd) is None]
    assert shell and all("|" in cmd or cmd.startswith("python -c") for cmd in shell), shell
    assert any(_in_process(cmd) for cmd, _ in _examples())


@pytest.mark.parametrize("command, expected", _params())
def test_readme_example(command, expected, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "120")  # what the shell is given; posemb's width when stdout is not a terminal
    args, cut = _in_process(command), _head_cut(command)
    if "untrained-lm" in command:  # docs/long-context.md's spectrum example: the example model, untrained
        sys.path.insert(0, str(ROOT / "examples"))
        import train_tiny_lm

        sys.path.pop(0)
        train_tiny_lm.build(tmp_path / "untrained-lm", steps=0)
    if args is not None:
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        printed = result.output  # stdout and stderr, in order, as `2>&1` shows them
    elif cut is not None:
        args, unit, count = cut
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        out = result.stdout_bytes  # only stdout goes through head; stderr reaches the terminal
        kept = out[:count] if unit == "c" else b"".join(out.splitlines(keepends=True)[:count])
        printed = kept.decode("utf-8", errors="replace")
    else:
        if request.node.get_closest_marker("early"):
            proc = request.getfixturevalue("early")
        else:
            if command.startswith("python -c") and "arrays.npz" in command:
                assert run_cli("inspect", "position matters", "--save", "arrays.npz").exit_code == 0
            proc = _shell(command, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout
        printed = proc.stdout
    assert "Traceback" not in printed
    actual = [line.rstrip() for line in printed.splitlines() if line.strip()]
    for want, got in zip(expected, actual[: len(expected)], strict=False):
        assert _same(want, got), f"the docs show:\n{want}\nposemb printed:\n{got}"
    assert len(actual) >= len(expected)


def _command_names() -> list[str]:
    from posemb_cli.cli import app

    return [command.name or command.callback.__name__ for command in app.registered_commands]


def test_every_command_has_help_and_a_docs_page():
    """The commands are read from the app: a new command needs help text and a page docs/NAME.md whose title names
    it (`stats merge` may be a section of the stats page), and no command page names a command the app lacks."""
    from posemb_cli.cli import app

    names = _command_names()
    assert "inspect" in names and len(names) == len(set(names))
    for command in app.registered_commands:
        assert (command.callback.__doc__ or "").strip(), f"{command.name} has no help text"
    for name in names:
        page = DOCS / f"{name.replace(' ', '-')}.md"
        if name == "stats merge" and not page.exists():
            page, heading = DOCS / "stats.md", r"^##+ `posemb stats merge`"
        else:
            heading = rf"^# .*posemb {name}\b"
        assert page.exists(), f"posemb {name} has no page: write docs/{page.name}"
        assert re.search(heading, page.read_text(encoding="utf-8"), flags=re.M), f"{page.name} has no heading {heading}"
    titled = [re.match(r"# `posemb ([\w ]+)`", p.read_text(encoding="utf-8")) for p in DOCS.glob("*.md")]
    assert {m[1] for m in titled if m} <= set(names), "a page documents a command the app lacks"


def test_readme_has_one_example_per_command_as_its_page_shows_it():
    """The README's table of commands: every command of the app has a row, and each row's example appears word for
    word on the page it links to (where the tests run it, if it is a `$` example)."""
    rows = re.findall(r"^\| `?([\w ]+?)`? \| `(.+?)` \| \[[^]]+\]\(docs/([\w-]+\.md)", README.read_text("utf-8"), re.M)
    assert set(_command_names()) <= {name for name, _, _ in rows}
    for _, example, page in rows:
        assert example in (DOCS / page).read_text(encoding="utf-8"), f"README: {example!r} is not on docs/{page}"


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    """What `make docs` (mkdocs build --strict) would refuse, checked without mkdocs: a page left out of the nav, or a
    nav entry with no page that is not one of the pages other work adds (mkdocs_hooks.OPTIONAL)."""
    nav = re.findall(r"^\s+- (?:[^:\n]+: )?([\w-]+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    pages = {page.name for page in DOCS.glob("*.md")}
    assert pages <= set(nav), f"pages missing from the nav of mkdocs.yml: {sorted(pages - set(nav))}"
    assert set(nav) - pages <= _hooks().OPTIONAL, f"nav entries without a page: {sorted(set(nav) - pages)}"


def test_the_nav_leaves_out_only_optional_pages_not_written_yet(tmp_path):
    hooks = _hooks()
    (tmp_path / "long-context.md").write_text("# Long context\n")
    nav = [{"Home": "index.md"}, {"Commands": [{"a": "extrapolate.md"}, {"b": "long-context.md"}, {"c": "typo.md"}]}]
    kept = hooks.on_config({"docs_dir": str(tmp_path), "nav": nav})["nav"]
    assert kept == [{"Home": "index.md"}, {"Commands": [{"b": "long-context.md"}, {"c": "typo.md"}]}]
