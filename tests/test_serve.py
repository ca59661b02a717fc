"""posemb serve: the same answers through the server as in-process, a light client, safety, and faults.

One server per test session (the `server` fixture), in a temp XDG_RUNTIME_DIR, started with `--detach -m bundled` the
way a user starts it; the last test kills it. Clients are real processes: a `posemb` script on PATH that enters as the
console script does (posemb_cli.__main__:main). The rest of the suite runs with POSEMB_SERVER=off (conftest.py).
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
    return env


def _seed_stale_files(folder: Path) -> None:
    """What a killed server leaves: a socket nobody listens on and a pid file nobody holds locked."""
    folder.mkdir(parents=True)
    folder.chmod(0o700)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(folder / protocol.SOCKET))
    (folder / protocol.PID_FILE).write_text("999999\n")


def _start_server() -> SimpleNamespace:
    """The session's server, started as a user does (`posemb serve --detach -m bundled`) in a temp XDG_RUNTIME_DIR
    where a killed server left its files. A job of conftest's `early` queue: it starts in the background while the
    in-process tests run, and the tests here (marked `early`) run last."""
    root = Path(tempfile.mkdtemp(prefix="posemb-serve-"))
    bin_folder = root / "bin"
    bin_folder.mkdir()
    script = bin_folder / "posemb"
    script.write_text(f"#!{sys.executable}\nfrom posemb_cli.__main__ import main\nmain()\n")
    script.chmod(0o755)
    env = _client_env(root / "run", bin_folder)
    _seed_stale_files(root / "run" / "posemb")
    started = subprocess.run(
        [str(script), "serve", "--detach", "-m", "bundled", "--idle-timeout", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert started.returncode == 0, started.stderr
    return SimpleNamespace(root=root, env=env, folder=root / "run" / "posemb", script=script, bin=bin_folder)


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
        "import sys, posemb_cli\n"
        "posemb_cli.__version__ = '0.0.0-other'\n"
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
        run, argv=["posemb", "models"], env={}, umask=0o22, package=None, stdio=[{"encoding": "utf-8"}] * 3
    )  # stdio lacks errors and buffering flags
    cases = {
        "over the limit": struct.pack(">I", 2**31) + b"{",
        "not JSON": struct.pack(">I", 5) + b"{oops",
        "not an object": _frame([1, 2, 3]),
        "unknown op": _frame({"op": "rm -rf"}),
        "no identity": _frame({"op": "run", "argv": ["posemb", "models"]}),
        "no file descriptors": _frame(dict(good, stdio=[dict(encoding="utf-8", errors="strict")] * 3)),
    }
    for name, payload in cases.items():
        reply = _raw(server, payload)
        assert reply is not None and reply.get("error", "").startswith("invalid request: "), (name, reply)
    r, w = os.pipe()
    try:
        stdio = [dict(encoding="utf-8", errors="strict", line_buffering=False, write_through=False)] * 3
        for bad in (dict(argv=["posemb", "a\0b"]), dict(env={"A=B": "c"}), dict(umask=-1), dict(stdio=good["stdio"])):
            reply = _raw(server, _frame({**good, "stdio": stdio, **bad}), fds=[r, w, w, r])
            assert reply is not None and reply.get("error", "").startswith("invalid request: "), (bad, reply)
        reply = _raw(server, _frame(dict(good, stdio=stdio)), fds=[r, w, w, r, r])  # one descriptor too many
        assert reply is not None and "more than 4 file descriptors" in reply["error"]
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
    """The server keeps at most 2 (--max-models default); a model whose weights change on disk is read again. The
    numbers are checked against transformers on the new weights."""
    import torch
    import transformers
    from conftest import build_tiny_model

    bert, gpt2 = _copy_model(tiny_models["BERT"], tmp_path / "bert"), tiny_models["GPT-2"]
    first = json.loads(_posemb(server, "inspect", "position", "-m", str(bert), "--json").stdout)
    assert _posemb(server, "inspect", "position", "-m", str(gpt2), "--json").returncode == 0
    kept = [m["folder"] for m in _status(server)["models"]]
    assert kept == [str(bert.resolve()), str(gpt2.resolve())]  # the bundled model, used least recently, went
    build_tiny_model("BERT", tmp_path / "other", seed=1)
    (tmp_path / "other" / "model.safetensors").replace(bert / "model.safetensors")
    second = json.loads(_posemb(server, "inspect", "position", "-m", str(bert), "--json").stdout)
    model = transformers.AutoModel.from_pretrained(str(bert)).eval()
    ids = torch.tensor([[t["id"] for t in second["tokens"]]])
    expected = model.embeddings.word_embeddings(ids)[0].norm(dim=-1).tolist()
    assert np.allclose(second["norms"]["token"], expected, atol=1e-5)
    assert not np.allclose(first["norms"]["token"], second["norms"]["token"], atol=1e-3)
    assert [m["folder"] for m in _status(server)["models"]] == [str(gpt2.resolve()), str(bert.resolve())]


IDLE_SERVER = """
import sys
from posemb_cli.server import server
server._import_everything = lambda: None  # nothing to answer: skip the warm-up imports (torch among them)
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


# ---------------------------------------------------------------- last: kill the server


def test_a_server_killed_mid_request_leaves_the_command_to_the_client(server):
    """The server dies while its child waits on stdin: the child dies with it, the client says so and runs the command
    itself (exit code as without a server); `--status` then finds the stale files and removes them."""
    args = ("compare", "--corpus", "-", "-m", "bundled", "-m", "scheme:rotary")
    proc = subprocess.Popen(
        [str(server.script), *args],
        env=server.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    status = _wait_running(server)
    os.kill(status["pid"], signal.SIGKILL)
    child = Path(f"/proc/{status['requests_running'][0]['pid']}")
    for _ in range(200):
        if not child.exists() or "zombie" in (child / "status").read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the server's child outlived it")
    out, err = proc.communicate(b"caf\xe9\n", timeout=120)
    local = run_cli(*args, input=b"caf\xe9\n")
    assert proc.returncode == local.exit_code == 1
    notice = b"posemb: the posemb server stopped before the command finished; running the command here\n"
    assert err == notice + local.stderr_bytes and out == b""
    status = _posemb(server, "serve", "--status")
    assert status.returncode == 1 and status.stderr == b"Error: no posemb server is running\n"
    assert not (server.folder / protocol.SOCKET).exists() and not (server.folder / protocol.PID_FILE).exists()
