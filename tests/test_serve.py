"""posemb serve: the same answers through the server as in-process, a light client, safety, and faults.

One server per test session (the `server` fixture), in a temp XDG_RUNTIME_DIR, started the way a new user starts it:
by a first command, which auto-starts it; the last test stops and kills it. Clients are real processes: a `posemb`
script on PATH that enters as the console script does (posemb_cli.__main__:main). The rest of the suite runs with
POSEMB_SERVER=off (conftest.py), so that no other test starts a server.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import run_cli
from test_readme import _examples

from posemb_cli.server import protocol


def _client_env(runtime: Path, bin_folder: Path) -> dict[str, str]:
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), COLUMNS="120", SOURCE_DATE_EPOCH="0")
    env["PATH"] = f"{bin_folder}{os.pathsep}{env['PATH']}"
    env.pop("POSEMB_SERVER", None)
    env.pop("CI", None)  # a CI runner's CI=true would keep the first command from starting the server
    return env


def _seed_stale_files(folder: Path) -> None:
    """What a killed server leaves: a socket nobody listens on and a pid file nobody holds locked."""
    folder.mkdir(parents=True)
    folder.chmod(0o700)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / protocol.SOCKET))
    (folder / protocol.PID_FILE).write_text("999999\n")


FIRST_TEXT = "the first command starts the server"
STARTED = re.compile(
    rb"posemb: started a server in the background \(pid (\d+)\) to make the next commands fast; "
    rb"`posemb serve --stop` stops it, POSEMB_SERVER=off turns this off\n"
)


def _start_server() -> SimpleNamespace:
    """The session's server, started as a new user starts it: by a first command (`posemb inspect TEXT --json`), in a
    temp XDG_RUNTIME_DIR where a killed server left its files. A job of conftest's `early` queue: it starts in the
    background while the in-process tests run, and the tests here (marked `early`) run last."""
    root = Path(tempfile.mkdtemp(prefix="posemb-serve-"))
    bin_folder = root / "bin"
    bin_folder.mkdir()
    script = bin_folder / "posemb"
    script.write_text(f"#!{sys.executable}\nfrom posemb_cli.__main__ import main\nmain()\n")
    script.chmod(0o755)
    env = _client_env(root / "run", bin_folder)
    _seed_stale_files(root / "run" / "posemb")
    first = subprocess.run(
        [str(script), "inspect", FIRST_TEXT, "--json"], env=env, cwd=root, capture_output=True, timeout=600
    )
    return SimpleNamespace(
        root=root, env=env, folder=root / "run" / "posemb", script=script, bin=bin_folder, first=first
    )


pytestmark = pytest.mark.early(job=_start_server, first=True)  # seconds of imports: start them before other jobs


@pytest.fixture(scope="session")
def server():
    import conftest

    jobs = conftest._early_jobs
    state = jobs.result(_start_server) if jobs is not None else _start_server()
    yield state
    subprocess.run([str(state.script), "serve", "--stop"], env=state.env, capture_output=True, timeout=120)
    shutil.rmtree(state.root, ignore_errors=True)


def _posemb(server, *args: str, cwd: Path | None = None, input: bytes | None = None, env=None, timeout: float = 120):
    return subprocess.run(
        [str(server.script), *args], env=env or server.env, cwd=cwd, input=input, capture_output=True, timeout=timeout
    )


def _status(server) -> dict:
    proc = _posemb(server, "serve", "--status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _wait_running(server, count: int = 1) -> dict:
    for _ in range(600):
        status = _status(server)
        if len(status["requests_running"]) >= count:
            return status
        time.sleep(0.05)
    raise AssertionError("the request never started")


def test_the_first_command_starts_the_server_and_the_next_one_uses_it(server):
    """The first command (no server running) starts one, says so in one line on stderr, and gets the answer it would
    get in-process; the second command is answered by that server, byte for byte as in-process."""
    local = run_cli("inspect", FIRST_TEXT, "--json")
    first = server.first
    assert first.returncode == local.exit_code == 0, first.stderr
    started = STARTED.fullmatch(first.stderr[: len(first.stderr) - len(local.stderr_bytes)])
    assert started and first.stderr.endswith(local.stderr_bytes), first.stderr
    assert first.stdout == local.stdout_bytes
    status = _status(server)
    assert status["pid"] == int(started.group(1)) and status["idle_timeout_seconds"] == 15 * 60
    assert status["requests_served"] >= 1  # the first command itself was answered by the new server
    served = status["requests_served"]
    second = _posemb(server, "inspect", FIRST_TEXT, "--json")
    assert (second.returncode, second.stdout, second.stderr) == (0, local.stdout_bytes, local.stderr_bytes)
    assert _status(server)["requests_served"] == served + 1


def test_no_server_is_started_with_ci_or_posemb_server_off(tmp_path, server):
    """CI=true, CI=1 and POSEMB_SERVER=off: the command runs in this process, no server starts, no folder is made.
    (`posemb inspect` with no text: a usage error, so the in-process run is quick.)"""
    env = _client_env(tmp_path / "run", server.bin)
    for extra in ({"CI": "true"}, {"CI": "1"}, {"POSEMB_SERVER": "off"}):
        proc = _posemb(server, "--debug", "inspect", env=dict(env, **extra))
        assert proc.returncode == 2 and b"Missing argument 'TEXT...'" in proc.stderr, proc.stderr
        assert b"started a server" not in proc.stderr and not (tmp_path / "run").exists()


def test_a_new_server_cleans_up_what_a_killed_one_left(server):
    log = (server.folder / protocol.LOG_FILE).read_text()
    assert "took over from server pid 999999, which is gone" in log
    assert f"removed a stale socket ({server.folder / protocol.SOCKET})" in log
    assert stat.S_IMODE(server.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((server.folder / protocol.SOCKET).stat().st_mode) == 0o600
    assert (server.folder / protocol.PID_FILE).read_text().strip() == str(_status(server)["pid"])


def test_status_names_pid_models_memory_requests_and_log(server):
    status = _status(server)
    assert [m["name"] for m in status["models"]] == ["sentence-transformers/all-MiniLM-L6-v2"]
    # all-MiniLM-L6-v2: 22.7 M float32 parameters (and its position-id buffers)
    assert 22.5e6 * 4 < status["models"][0]["memory_bytes"] < 23e6 * 4
    assert status["memory_bytes"] > status["models"][0]["memory_bytes"]
    assert status["log"] == str(server.folder / protocol.LOG_FILE) and Path(status["log"]).is_file()
    text = _posemb(server, "serve", "--status").stdout.decode()
    assert re.search(rf"^posemb server \S+, pid {status['pid']}, up \d+", text, flags=re.M)
    for label in ("socket", "log", "requests", "memory", "models", "idle"):
        assert re.search(rf"^{label} +\S", text, flags=re.M), (label, text)
    assert "sentence-transformers/all-MiniLM-L6-v2  cpu  9" in text  # 91 MB


# ---------------------------------------------------------------- same output


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".npz":  # a zip stores the time it was written: compare the arrays
        with np.load(a) as x, np.load(b) as y:
            return sorted(x.files) == sorted(y.files) and all(np.array_equal(x[k], y[k]) for k in x.files)
    return a.read_bytes() == b.read_bytes()


# Left out, to keep `make test` short: four of the README's six pictures (seconds each to draw; the SVG one and the
# bias PNG run) and the identical-word probe (seconds of forward passes; no path of its own through the server).
SLOW = ("--plot all", "--plot positions", "--plot embeddings", '"我爱自然语言处理" --plot attention -o', "--probe")


def _readme_commands() -> list[str]:
    return [cmd for cmd, _ in _examples() if cmd.startswith("posemb ") and not cmd.startswith("posemb serve")]


def test_readme_examples_are_byte_identical_through_the_server(server, tmp_path, monkeypatch):
    """The `$ posemb` examples of the README (all but SLOW) through the server, against the same command run
    in this process: stdout and stderr byte for byte, exit code, and the files written."""
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    commands = [cmd for cmd in _readme_commands() if not any(slow in cmd for slow in SLOW)]
    assert len(commands) >= 12
    for number, command in enumerate(commands):
        posemb_part, _, pipe = command.partition("|")
        there, here = tmp_path / f"server{number}", tmp_path / f"here{number}"
        there.mkdir(), here.mkdir()
        proc = subprocess.run(command, shell=True, cwd=there, env=server.env, capture_output=True, timeout=120)
        monkeypatch.chdir(here)
        local = run_cli(*shlex.split(posemb_part)[1:])
        if pipe:  # `| head -c N`: what got through the pipe
            size = int(re.fullmatch(r"\s*head -c (\d+)\s*", pipe).group(1))
            assert (proc.returncode, proc.stdout) == (0, local.stdout_bytes[:size]), command
            continue
        assert proc.stdout == local.stdout_bytes, command
        assert proc.stderr == local.stderr_bytes, command
        assert proc.returncode == local.exit_code, command
        files, local_files = _files(there), _files(here)
        assert files.keys() == local_files.keys(), command
        assert all(_same_file(files[name], local_files[name]) for name in files), command


@pytest.mark.parametrize(
    "args",
    [
        ["inspect"],
        ["compare", "x", "-m", "bundled"],
        ["inspect", "--help"],
    ],
    ids=["missing-argument", "one-model", "help"],
)
def test_usage_errors_are_byte_identical_to_a_real_process(server, args):
    """Usage lines name the program as the client's process would (here `posemb`, from the script's name)."""
    there = _posemb(server, *args)
    here = _posemb(server, *args, env=dict(server.env, POSEMB_SERVER="off"))
    assert (there.returncode, there.stdout, there.stderr) == (here.returncode, here.stdout, here.stderr)
    assert there.returncode in (0, 2)


def test_stdin_streams_through_the_server(server):
    lines = "".join(f"text number {i}\n" for i in range(5)).encode()
    proc = _posemb(server, "inspect", "-", "--format", "jsonl", input=lines)
    local = run_cli("inspect", "-", "--format", "jsonl", input=lines.decode())
    assert proc.returncode == 0 and proc.stdout == local.stdout_bytes
    assert [json.loads(line)["text"] for line in proc.stdout.splitlines()] == [f"text number {i}" for i in range(5)]


def test_the_client_imports_nothing_heavy(server, tmp_path):
    code = (
        "import runpy, sys\n"
        "sys.argv = ['posemb', 'inspect', 'position matters', '--json']\n"
        "try:\n"
        "    runpy.run_module('posemb_cli', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = ('torch', 'transformers', 'matplotlib', 'numpy', 'typer', 'rich')\n"
        "print('HEAVY', code, sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=server.env, capture_output=True, timeout=60)
    assert b"HEAVY 0 []" in proc.stderr
    assert json.loads(proc.stdout)["tokens"][1]["token"] == "position"


HELP_IMPORTS = (
    "import sys\n"
    "sys.argv = ['posemb', '--help']\n"
    "from posemb_cli import __main__, cli\n"
    "try:\n"
    "    __main__.main()\n"
    "except SystemExit:\n"
    "    pass\n"
    "loaded = [m for m in ('posemb_cli.server.protocol', 'socket', 'json', 'torch') if m in sys.modules]\n"
    "strings = [name for name, value in cli.inspect.__annotations__.items() if isinstance(value, str)]\n"
    "print('LIGHT', loaded, strings, file=sys.stderr)\n"
)


def test_help_skips_the_client_and_typer_gets_evaluated_annotations(server):
    """`posemb --help` (no command: nothing to hand to a server) imports neither the protocol nor socket and json, and
    cli.py's annotations are objects, not strings Typer would evaluate at each start (~25 ms of `--help`)."""
    proc = subprocess.run([sys.executable, "-c", HELP_IMPORTS], env=server.env, capture_output=True, timeout=60)
    assert b"LIGHT [] []" in proc.stderr, proc.stderr
    assert proc.stdout.startswith(b"Usage: posemb [OPTIONS] COMMAND"), proc.stdout[:80]


def test_eight_clients_at_once(server):
    texts = [f"client {i} asks about position {i * 7}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda text: _posemb(server, "inspect", text, "--json", "--attention"), texts))
    for text, proc in zip(texts, answers, strict=True):
        local = run_cli("inspect", text, "--json", "--attention")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == local.stdout_bytes and proc.stderr == local.stderr_bytes


# ---------------------------------------------------------------- versions, Ctrl-C


def test_a_client_of_another_version_or_setting_runs_the_command_itself(server):
    other = (
        "import sys, posemb_cli._version\n"
        "posemb_cli._version.__version__ = '0.0.0-other'\n"
        "sys.argv = ['posemb'] + sys.argv[1:]\n"
        "from posemb_cli.__main__ import main\n"
        "main()\n"
    )
    served = _status(server)["requests_served"]
    for debug in ([], ["--debug"]):
        proc = subprocess.run(
            [sys.executable, "-c", other, *debug, "inspect", "--help"], env=server.env, capture_output=True, timeout=60
        )
        assert proc.returncode == 0 and b"Usage: posemb inspect" in proc.stdout
        note = f"it runs posemb {_status(server)['version']}, this is posemb 0.0.0-other; running here"
        assert (note.encode() in proc.stderr) == bool(debug), proc.stderr
    proc = _posemb(server, "--debug", "inspect", "--help", env=dict(server.env, OMP_NUM_THREADS="3"))
    assert proc.returncode == 0 and b"it started with other values of OMP_NUM_THREADS; running here" in proc.stderr
    assert _status(server)["requests_served"] == served  # none of these reached the server


def test_ctrl_c_cancels_the_request_and_the_server_keeps_serving(server, tmp_path):
    """As tests/test_errors.py does in-process: two lines answered, then Ctrl-C; stdin stays open until the end."""
    proc = subprocess.Popen(
        [str(server.script), "inspect", "-", "--format", "jsonl", "--batch-size", "1", "--save", "out.npz"],
        cwd=tmp_path,
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdin.write(b"first line\nsecond line\n")
    proc.stdin.flush()
    first = proc.stdout.readline()
    proc.stdout.readline()
    child = _wait_running(server)["requests_running"][0]["pid"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert json.loads(first)["text"] == "first line"
    assert proc.stderr.read() == b"Interrupted after 2 text(s); no files were written.\n"
    proc.stdin.close()
    assert list(tmp_path.iterdir()) == []
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
    status = _status(server)
    assert status["requests_running"] == [] and status["pid"] == int((server.folder / protocol.PID_FILE).read_text())


# ---------------------------------------------------------------- safety


def _raw(server, payload: bytes, fds: list[int] | None = None) -> dict | None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(server.folder / protocol.SOCKET))
        if fds:
            socket.send_fds(sock, [payload], fds)
        elif payload:
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return protocol.receive(sock)


def _frame(obj) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def test_hostile_requests_get_an_error_and_the_server_keeps_serving(server):
    identity = subprocess.run(  # a client's identity (this process's environment has changed since the server started)
        [
            sys.executable,
            "-c",
            "import json; from posemb_cli.server import protocol; print(json.dumps(protocol.identity()))",
        ],
        env=server.env,
        capture_output=True,
        check=True,
    )
    run = {"op": "run", "identity": json.loads(identity.stdout)}
    good = dict(
        run,
        argv=["posemb", "models"],
        env={},
        umask=0o22,
        package=None,
        stdio=[{"encoding": "utf-8"}] * 3,  # lacks errors and buffering flags
        setting=protocol.process_setting(),
    )
    cases = {
        "over the limit": struct.pack(">I", 2**31) + b"{",
        "not JSON": struct.pack(">I", 5) + b"{oops",
        "not an object": _frame([1, 2, 3]),
        "unknown op": _frame({"op": "rm -rf"}),
        "no identity": _frame({"op": "run", "argv": ["posemb", "models"]}),
        "no file descriptors": _frame(dict(good, stdio=[dict(encoding="utf-8", errors="strict")] * 3)),
        "nested deeper than Python recurses": struct.pack(">I", 200_002) + b"[" * 100_000 + b"]" * 100_000 + b"{}",
    }
    for name, payload in cases.items():
        reply = _raw(server, payload)
        assert reply is not None and reply.get("error", "").startswith("invalid request: "), (name, reply)
    assert _raw(server, struct.pack(">I", 100) + b'{"op": "st') is None  # cut short: the connection is closed
    r, w = os.pipe()
    try:
        stdio = [dict(encoding="utf-8", errors="strict", line_buffering=False, write_through=False)] * 3
        for bad in (dict(argv=["posemb", "a\0b"]), dict(env={"A=B": "c"}), dict(umask=-1), dict(stdio=good["stdio"])):
            reply = _raw(server, _frame({**good, "stdio": stdio, **bad}), fds=[r, w, w, r])
            assert reply is not None and reply.get("error", "").startswith("invalid request: "), (bad, reply)
        reply = _raw(server, _frame(dict(good, stdio=stdio)), fds=[r, w, w, r, r])  # one descriptor too many
        assert reply is not None and "more than 4 file descriptors" in reply["error"]
        reply = _raw(server, _frame(dict(good, stdio=stdio)), fds=[r] * 250)  # hundreds: the kernel drops the rest
        assert reply is not None and "more than 4 file descriptors" in reply["error"]
        reply = _raw(server, _frame(dict(good, stdio=stdio)), fds=[r, w, w, w])  # a pipe as the working directory
        assert reply == {"error": "invalid request: the working directory is not a folder"}
        folder = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            reply = _raw(server, _frame(dict(good, stdio=stdio)), fds=[folder, w, w, folder])  # a folder as stdin
            assert reply == {"error": "invalid request: descriptor 0 is a folder"}
        finally:
            os.close(folder)
        reply = _raw(server, _frame(dict(good, stdio=stdio, setting=None)), fds=[r, w, w, r])
        assert reply == {"error": "invalid request: a run request must carry the client's process setting"}
    finally:
        os.close(r), os.close(w)
    assert _raw(server, b"") is None  # connected and left without a word
    proc = _posemb(server, "inspect", "still serving", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["text"] == "still serving"


OTHER_USER = """
import json, os, socket, sys
path = sys.argv[1]
os.setgroups([]); os.setgid(65534); os.setuid(65534)
with socket.socket(socket.AF_UNIX) as sock:
    try:
        sock.connect(path)
    except OSError as exc:
        print(json.dumps({"connect": exc.strerror})); sys.exit()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    print(json.dumps({"reply": data[4:].decode()}))
"""


@pytest.mark.skipif(os.getuid() != 0, reason="switching to another user needs root")
def test_another_user_cannot_connect(server, tmp_path):
    """Three locks: the folder is 0700 (checked above), the socket 0600, and the server checks the peer's uid
    (SO_PEERCRED) on every connection. A hard link of the socket in a public folder gets past the first; the socket's
    mode stops uid 65534 there, and when that is opened too, the server answers nothing but a refusal."""
    path = server.folder / protocol.SOCKET
    public = Path("/tmp") / f"posemb-test-{os.getpid()}.sock"
    try:
        os.link(path, public)
    except OSError as exc:
        pytest.skip(f"cannot link the socket into /tmp: {exc}")
    try:
        refused = subprocess.run([sys.executable, "-c", OTHER_USER, public], capture_output=True, text=True, timeout=60)
        os.chmod(path, 0o666)
        answered = subprocess.run(
            [sys.executable, "-c", OTHER_USER, public], capture_output=True, text=True, timeout=60
        )
    finally:
        os.chmod(path, 0o600)
        public.unlink()
    assert json.loads(refused.stdout) == {"connect": "Permission denied"}, refused.stderr
    assert answered.stdout, answered.stderr
    assert json.loads(answered.stdout) == {"reply": '{"error": "refused: uid 65534 is not this server\'s user"}'}
    assert "connection refused: uid 65534" in (server.folder / protocol.LOG_FILE).read_text()
    assert _status(server)["requests_running"] == []  # still serving


# ---------------------------------------------------------------- models in memory


def _copy_model(source: Path, target: Path) -> Path:
    return Path(shutil.copytree(source, target))


def test_trust_remote_code_is_per_request_and_never_kept(server, tiny_models, tmp_path):
    folder = _copy_model(tiny_models["BERT"], tmp_path / "bert")
    args = ("inspect", "trust me", "-m", str(folder), "--json", "--trust-remote-code")
    proc = _posemb(server, *args)
    assert proc.returncode == 0 and proc.stdout == run_cli(*args).stdout_bytes
    assert all(m["folder"] != str(folder) for m in _status(server)["models"])
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my-custom-model", auto_map={"AutoModel": "modeling_custom.CustomModel"})
    (folder / "config.json").write_text(json.dumps(config))
    proc = _posemb(server, "inspect", "x", "-m", str(folder))
    assert proc.returncode == 1 and b"posemb never runs remote code unless you pass --trust-remote-code" in proc.stderr


def test_models_are_kept_least_recently_used_and_reloaded_when_their_files_change(server, tiny_models, tmp_path):
    """The server keeps at most 2 (--max-models default); a model whose weights change on disk is read again, even when
    rewritten in place with its size and mtime kept. The numbers are checked against transformers on the new
    weights."""
    import torch
    import transformers
    from conftest import build_tiny_model

    bert, gpt2 = _copy_model(tiny_models["BERT"], tmp_path / "bert"), tiny_models["GPT-2"]
    first = json.loads(_posemb(server, "inspect", "position", "-m", str(bert), "--json").stdout)
    assert _posemb(server, "inspect", "position", "-m", str(gpt2), "--json").returncode == 0
    kept = [m["folder"] for m in _status(server)["models"]]
    assert kept == [str(bert.resolve()), str(gpt2.resolve())]  # the bundled model, used least recently, went
    build_tiny_model("BERT", tmp_path / "other", seed=1)
    weights, before = bert / "model.safetensors", (bert / "model.safetensors").stat()
    new = (tmp_path / "other" / "model.safetensors").read_bytes()
    assert len(new) == before.st_size
    with open(weights, "r+b") as handle:  # rewritten in place: same inode, same size, and the old mtime put back
        handle.write(new)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = weights.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    second = json.loads(_posemb(server, "inspect", "position", "-m", str(bert), "--json").stdout)
    model = transformers.AutoModel.from_pretrained(str(bert)).eval()
    ids = torch.tensor([[t["id"] for t in second["tokens"]]])
    expected = model.embeddings.word_embeddings(ids)[0].norm(dim=-1).tolist()
    assert np.allclose(second["norms"]["token"], expected, atol=1e-5)
    assert not np.allclose(first["norms"]["token"], second["norms"]["token"], atol=1e-3)
    assert [m["folder"] for m in _status(server)["models"]] == [str(gpt2.resolve()), str(bert.resolve())]


IDLE_SERVER = """
import sys
from posemb_cli.server import lifecycle
lifecycle._import_everything = lambda: None  # nothing to answer: skip the warm-up imports (torch among them)
sys.argv = ["posemb", "serve", "--idle-timeout", sys.argv[1]]
from posemb_cli.__main__ import main
main()
"""


def test_a_server_stops_by_itself_when_idle(server, tmp_path):
    """A real `posemb serve --idle-timeout 0.02` (1.2 s): it stops on its own, exit 0, and leaves no socket behind."""
    env = _client_env(tmp_path, server.bin)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", IDLE_SERVER, "0.02"], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start > 1.2
    assert proc.stderr.decode().startswith(f"posemb server running: pid {proc.stderr.split()[4].decode()}")
    log = (tmp_path / "posemb" / protocol.LOG_FILE).read_text()
    assert "stopping: idle for 1.2 s; 0 request(s) still running" in log and "stopped (idle for 1.2 s)" in log
    assert sorted(p.name for p in (tmp_path / "posemb").iterdir()) == [protocol.LOG_FILE]


# ---------------------------------------------------------------- the client's setting


def _state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R running, S sleeping, T stopped, Z zombie)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_for(predicate, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _readline(stream, seconds: float = 60) -> bytes:
    """One line from a pipe, or AssertionError: the answer must come before the test writes more."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        assert selector.select(seconds), "no answer yet"
    return stream.readline()


def test_stdin_is_streamed_line_by_line_and_ctrl_z_suspends_the_command(server):
    """With --batch-size 1 (as in-process: a batch is answered when it is full), each answer comes before the next line
    is written; Ctrl-Z (SIGTSTP to the client) stops the client and the server's child, `fg` (SIGCONT) continues both;
    the output is what the same lines give in-process."""
    proc = subprocess.Popen(
        [str(server.script), "inspect", "-", "--format", "jsonl", "--batch-size", "1"],
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,  # a job of its own, as a shell makes it (the kernel ignores Ctrl-Z in an orphaned group)
    )
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()
        first = _readline(proc.stdout)
        child = _wait_running(server)["requests_running"][0]["pid"]
        proc.send_signal(signal.SIGTSTP)
        _wait_for(lambda: _state(proc.pid) == "T" and _state(child) == "T", "client and child to stop")
        proc.stdin.write(b"second line\n")
        proc.stdin.flush()
        time.sleep(0.3)
        assert _state(child) == "T"  # still stopped: nothing answered while suspended
        proc.send_signal(signal.SIGCONT)
        second = _readline(proc.stdout)
        assert _state(child) != "T"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
    local = run_cli("inspect", "-", "--format", "jsonl", "--batch-size", "1", input="first line\nsecond line\n")
    assert first + second == local.stdout_bytes and proc.stderr.read() == local.stderr_bytes


def test_sigterm_to_a_stats_checkpoint_client_saves_it_as_in_process(server, tmp_path):
    """As tests/test_shards.py checks in-process: SIGTERM to `stats --checkpoint` ends the run with exit 130, the
    checkpoint saved and said so; here the SIGTERM goes to the client, which passes it on."""
    from posemb_cli import partials

    checkpoint = tmp_path / "run.ckpt"
    proc = subprocess.Popen(
        [str(server.script), "stats", "-", "--checkpoint", str(checkpoint), "--checkpoint-texts", "1"]
        + ["--batch-size", "1", "--json"],
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write("".join(f"text number {k}\n" for k in range(2000)).encode())
        proc.stdin.close()
        _wait_for(lambda: checkpoint.exists() and partials.read_partial(checkpoint).counts["texts"] >= 1, "a save")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    done = partials.read_partial(checkpoint).counts["texts"]
    assert proc.stdout.read() == b""
    assert f"Interrupted after {done} text(s); checkpoint {checkpoint} saved".encode() in proc.stderr.read()


def test_umask_and_ulimit_f_apply_to_the_command_through_the_server(server, tmp_path):
    """The child takes the client's umask and resource limits: a file written gets the mode the umask gives, and with
    `ulimit -f 1` (1,024 bytes) the JSON output stops there with an error, as a fresh process's would."""
    import resource

    served = _status(server)["requests_served"]
    text = "limits apply " * 20

    def umask() -> None:
        os.umask(0o027)

    def fsize() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    subprocess.run(
        [str(server.script), "inspect", text, "--save", "out.npz"], env=server.env, cwd=tmp_path, preexec_fn=umask
    )
    assert stat.S_IMODE((tmp_path / "out.npz").stat().st_mode) == 0o640
    with open(tmp_path / "big.json", "wb") as out:
        full = subprocess.run([str(server.script), "inspect", text, "--json"], env=server.env, stdout=out)
    with open(tmp_path / "cut.json", "wb") as out:
        cut = subprocess.run(
            [str(server.script), "inspect", text, "--json"],
            env=server.env,
            stdout=out,
            stderr=subprocess.PIPE,
            preexec_fn=fsize,
        )
    assert full.returncode == 0 and (tmp_path / "big.json").stat().st_size > 4096
    assert cut.returncode == 1 and (tmp_path / "cut.json").stat().st_size <= 1024
    assert cut.stderr.startswith(b"Error: ") and b"File too large" in cut.stderr, cut.stderr
    assert _status(server)["requests_served"] == served + 3  # all three through the server


def _other_group() -> None:
    os.setgroups([]), os.setgid(65534)


def _more_memory_limit() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2**40, resource.RLIM_INFINITY))


def test_a_client_whose_setting_a_fork_cannot_take_runs_the_command_itself(server):
    """Other groups (files would get another group), a memory limit (ulimit -v, which a fork of the server would reach
    at other points), other CPUs (taskset: another thread count), another mount namespace (a PrivateTmp or container
    client): the client runs the command itself and --debug says why. (`posemb inspect` with no text: a quick usage
    error in-process.)"""
    served = _status(server)["requests_served"]
    cases = {
        "it runs with other groups": _other_group,
        "its RLIMIT_AS limit is unlimited/unlimited, this one's 1099511627776/unlimited": _more_memory_limit,
    }
    if os.getuid() != 0:
        del cases["it runs with other groups"]
    if len(os.sched_getaffinity(0)) > 1:
        cases["it may run on other CPUs (taskset)"] = lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    for why, preexec in cases.items():
        proc = subprocess.run(
            [str(server.script), "--debug", "inspect"], env=server.env, capture_output=True, preexec_fn=preexec
        )
        assert proc.returncode == 2 and why.encode() in proc.stderr, proc.stderr
        assert b"; running here\n" in proc.stderr, proc.stderr
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "--mount", "true"], capture_output=True) if unshare else None
    if probe is not None and probe.returncode == 0:
        proc = subprocess.run(
            [unshare, "--mount", str(server.script), "--debug", "inspect"], env=server.env, capture_output=True
        )
        assert proc.returncode == 2 and b"it runs in other namespaces (mnt)" in proc.stderr, proc.stderr
    assert _status(server)["requests_served"] == served


# ---------------------------------------------------------------- trust


@pytest.mark.parametrize("kind", ["open", "symlink", "file", "other-user"])
def test_an_unsafe_socket_folder_is_refused_in_one_line_and_no_socket_is_made(server, tmp_path, kind):
    runtime = tmp_path / "run"
    runtime.mkdir()
    folder = runtime / "posemb"
    if kind == "open":
        folder.mkdir(mode=0o700)
        folder.chmod(0o755)
        why = b"is open to other users (mode 755)"
    elif kind == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        folder.symlink_to(tmp_path / "elsewhere")
        why = b"is a symlink"
    elif kind == "file":
        folder.write_text("")
        why = b"is not a folder"
    else:
        if os.getuid() != 0:
            pytest.skip("giving a folder to another user needs root")
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
        why = b"belongs to uid 65534"
    env = _client_env(runtime, server.bin)
    with ThreadPoolExecutor(2) as pool:  # the server and a client, at once
        serving = pool.submit(_posemb, server, "serve", env=env)
        client = _posemb(server, "--debug", "inspect", env=env)
        served = serving.result()
    assert served.returncode == 1 and served.stderr.startswith(b"Error: refusing to serve: "), served.stderr
    assert served.stderr.count(b"\n") == 1 and why in served.stderr, served.stderr
    assert client.returncode == 2 and b"posemb: not using the posemb server (" in client.stderr
    assert why in client.stderr and b"started a server" not in client.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_socket()]


FOREIGN_SERVER = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.bind(sys.argv[1])
os.setgroups([]); os.setgid(65534); os.setuid(65534)
sock.listen(8)  # SO_PEERCRED records who listened: uid 65534
print("listening", flush=True)
while True:
    conn, _ = sock.accept()
    conn.recv(1)
"""


@pytest.mark.skipif(os.getuid() != 0, reason="a listener of another user needs root")
def test_a_socket_served_by_another_user_is_not_used(server, tmp_path):
    """The client checks the server's uid too (SO_PEERCRED), on every connection: a socket in this user's folder
    that another user's process listens on is not trusted with the command."""
    runtime = tmp_path / "run"
    (runtime / "posemb").mkdir(parents=True, mode=0o700)
    path = runtime / "posemb" / protocol.SOCKET
    fake = subprocess.Popen([sys.executable, "-c", FOREIGN_SERVER, str(path)], stdout=subprocess.PIPE)
    try:
        assert fake.stdout.readline() == b"listening\n"
        proc = _posemb(server, "--debug", "inspect", env=_client_env(runtime, server.bin))
    finally:
        fake.kill()
        fake.wait()
    assert proc.returncode == 2 and f"the server at {path} runs as uid 65534, not as this user".encode() in proc.stderr


# ---------------------------------------------------------------- hostile requests: out of file descriptors

FD_SERVER = """
import resource, sys
from posemb_cli.server import lifecycle
lifecycle._import_everything = lambda: None  # nothing to answer: skip the warm-up imports (torch among them)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
sys.argv = ["posemb", "serve", "--idle-timeout", "0"]
from posemb_cli.__main__ import main
main()
"""


def test_a_server_out_of_file_descriptors_does_not_spin_and_serves_again(server, tmp_path):
    """A server with 48 descriptors, and 100 connections held open: accept fails (EMFILE), the server pauses instead
    of spinning (under 0.3 s of CPU in 2 s), the log says so a bounded number of times, and once the connections
    close it answers --status again."""
    env = _client_env(tmp_path, server.bin)
    proc = subprocess.Popen([sys.executable, "-c", FD_SERVER], env=env, stderr=subprocess.PIPE)
    folder = tmp_path / "posemb"
    try:
        assert proc.stderr.readline().startswith(b"posemb server running: pid ")
        held = []
        for _ in range(100):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(folder / protocol.SOCKET))  # queued in the backlog even when accept fails
            held.append(sock)
        time.sleep(0.3)
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        before = int(fields[11]) + int(fields[12])
        time.sleep(2)
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12]) - before
        assert ticks < 0.3 * os.sysconf("SC_CLK_TCK"), ticks
        log = (folder / protocol.LOG_FILE).read_text()
        assert 1 <= log.count("accept failed") <= 2 and "pausing" in log
        for sock in held:
            sock.close()
        status = _wait_for(lambda: _posemb(server, "serve", "--status", "--json", env=env), "status")
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# ---------------------------------------------------------------- last: stop and kill the server


def test_serve_stop_lets_running_commands_finish_and_a_killed_server_never_leaves_partial_numbers(server):
    """Two clients stream stdin through the server. `posemb serve --stop` while they run: no new command is taken,
    and the first one, given its second line, ends with all its numbers (as in-process). Then the server is killed
    while the second one still streams: its child dies with it, and since the input it read from the pipe cannot be
    read again, the client exits 1 with one line, not 0 with part of the numbers."""
    clients = [
        subprocess.Popen(
            [str(server.script), "inspect", "-", "--format", "jsonl", "--batch-size", "1"],
            env=server.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    stopper = None
    try:
        for client in clients:
            client.stdin.write(b"first line\n")
            client.stdin.flush()
        answers = [_readline(client.stdout) for client in clients]
        status = _wait_running(server, 2)
        stopper = subprocess.Popen([str(server.script), "serve", "--stop"], env=server.env, stderr=subprocess.PIPE)
        _wait_for(lambda: not (server.folder / protocol.SOCKET).exists(), "the server to stop listening")
        first, second = clients
        first.stdin.write(b"second line\n")
        first.stdin.close()
        assert first.wait(timeout=60) == 0
        local = run_cli("inspect", "-", "--format", "jsonl", "--batch-size", "1", input="first line\nsecond line\n")
        assert answers[0] + first.stdout.read() == local.stdout_bytes and first.stderr.read() == b""
        os.kill(status["pid"], signal.SIGKILL)
        assert second.wait(timeout=60) == 1
        assert answers[1] + second.stdout.read() == local.stdout_bytes.splitlines(keepends=True)[0]
        assert second.stderr.read() == (
            b"Error: the posemb server stopped before the command finished, so its output is incomplete; "
            b"run the command again (POSEMB_SERVER=off runs it in this process)\n"
        )
        assert stopper.wait(timeout=60) == 0
    finally:
        for proc in [*clients, *([stopper] if stopper else [])]:
            proc.kill()
    status = _posemb(server, "serve", "--status")
    assert status.returncode == 1 and status.stderr == b"Error: no posemb server is running\n"
    assert not (server.folder / protocol.SOCKET).exists() and not (server.folder / protocol.PID_FILE).exists()
