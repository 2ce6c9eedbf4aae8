"""Real processes for the tests: the service binary, redis-server, a Celery worker and beat.

Each is started in a temporary folder, on a free loopback port where it listens, and stopped
(SIGTERM, then SIGKILL) however the test ends. Waits poll with a deadline; nothing sleeps and
hopes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
COLLECT = HERE / "collect"

T = TypeVar("T")


def task(name: str, extra: str = "", script: str = "record.sh") -> str:
    """One task of an ``external-tasks.yaml``: ``script`` from tests/collect run with bash, under
    the cluster type ``Probe`` (so at ``probe/<kebab name>``), plus the YAML lines of ``extra``."""
    lines = "".join(f"  {line}\n" for line in extra.strip().splitlines())
    return (
        f"- name: {name}\n  cluster_type: Probe\n  language: bash\n"
        f"  executable: {script}\n  collected: true\n{lines}"
    )


def poll(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.05) -> T:
    """Calls ``check`` until it returns something other than None/False; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def binary() -> Path:
    """The service binary: ``CS_BINARY``, else the debug build of this repository."""
    path = Path(os.environ.get("CS_BINARY") or REPO / "target/debug/celery-service")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"the celery-service binary is missing at {path}: run `cargo build` in {REPO} "
            "or point CS_BINARY at one",
            pytrace=False,
        )
    return path


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Service:
    """The real service in ``dir``: ``external-tasks.yaml``, ``collect/``, ``logs/``, ``out/``.

    The scripts of ``tests/collect`` write what they were given into ``out/`` (the service
    passes its environment, ``CS_TEST_OUT`` included, to every task).
    """

    url: str

    def __init__(
        self,
        dir: Path,
        yaml: str,
        *,
        args: Sequence[str] = (),
        address: str = "127.0.0.1:0",
        collect: Path = COLLECT,
    ) -> None:
        self.dir = dir
        self.out = dir / "out"
        self.out.mkdir(exist_ok=True)
        if not (dir / "collect").exists():
            shutil.copytree(collect, dir / "collect")
        self.yaml = dir / "external-tasks.yaml"
        self.yaml.write_text(yaml)
        self.stdout: list[str] = []
        # No drain delay when a test stops the service (nothing balances its load).
        env = {**os.environ, "CS_TEST_OUT": str(self.out), "CS_DRAIN_DELAY": "0s"}
        env.pop("CS_LOG", None)
        self.proc = subprocess.Popen(
            [
                str(binary()),
                "run",
                "--address",
                address,
                "--external-task-config",
                str(self.yaml),
                "--collect-dir",
                str(dir / "collect"),
                "--log-dir",
                str(dir / "logs"),
                "--log-console",
                "--kill-grace",
                "1s",
                *args,
            ],
            cwd=dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        self._address: str | None = None
        self._listening = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if not self._listening.wait(20) or self._address is None:
            stop(self.proc)
            pytest.fail("the service did not start; stdout:\n" + "\n".join(self.stdout))
        self.url = f"http://{self._address}"

    def _read_stdout(self) -> None:
        # Same as tests/common/mod.rs: the first "listening on <address>" line gives the port.
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.stdout.append(line)
            pos = line.find("listening on ")
            if pos >= 0 and not self._listening.is_set():
                rest = line[pos + len("listening on ") :].split()
                self._address = rest[0] if rest else None
                self._listening.set()
        self._listening.set()

    def write_yaml(self, text: str) -> None:
        """Replaces the config the way editors and ConfigMaps do: a new file renamed over it."""
        tmp = self.yaml.with_name(".external-tasks.yaml.new")
        tmp.write_text(text)
        tmp.replace(self.yaml)

    def close(self) -> None:
        stop(self.proc)


class Redis:
    """Debian's redis-server on a free port, no persistence."""

    def __init__(self, dir: Path) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(exe).exists():
            pytest.fail("redis-server is missing: apt-get install redis-server", pytrace=False)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll("redis-server to answer PING", self._ping, timeout=20)

    def _ping(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"redis-server exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def close(self) -> None:
        stop(self.proc)


class CeleryProcess:
    """``python -m celery -A <app> <args>`` with its output in ``log``; ``app`` is imported
    from ``path`` (tests/ for ``e2e_app``, the Django project's folder for ``proj``)."""

    def __init__(
        self,
        dir: Path,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        app: str = "e2e_app",
        path: Path = HERE,
    ) -> None:
        self.log = dir / f"{name}.log"
        self._file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, *args],
            cwd=dir,
            env={**os.environ, **env, "PYTHONPATH": str(path)},
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> str:
        """Waits until ``needle`` is in the log; fails (showing the log) if the process dies."""

        def seen() -> bool:
            if needle in self.text():
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"celery exited with {self.proc.returncode}:\n{self.text()}")
            return False

        poll(f"{needle!r} in {self.log.name}", seen, timeout)
        return self.text()

    def close(self) -> None:
        stop(self.proc, grace=15)
        self._file.close()


@contextlib.contextmanager
def celery_process(
    dir: Path,
    name: str,
    args: list[str],
    env: Mapping[str, str],
    ready: str,
    app: str = "e2e_app",
    path: Path = HERE,
) -> Iterator[CeleryProcess]:
    """A :class:`CeleryProcess`, once ``ready`` is in its log; stopped on leaving."""
    process = CeleryProcess(dir, name, args, env, app, path)
    try:
        process.wait_for(ready, timeout=60)
        yield process
    finally:
        process.close()


def pid_gone(pid: int) -> bool:
    """Whether ``pid`` has ended: no ``/proc/<pid>``, or only a zombie left for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # The state follows the command name, which is in parentheses and may hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
