"""The real service binary on free loopback ports, and Debian's chromium driven by Playwright.

Every server runs in a temporary folder with its own config, logs and result store, and is
stopped (SIGTERM, then SIGKILL) however the test ends. The browser is the system's chromium
(``CHROMIUM`` or /usr/bin/chromium): Playwright's own browser download is never used. Without
it the tests fail in CI (``CI`` set) and are skipped loudly elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

TASKS = """\
- name: ticker
  cluster_type: TendbCluster
  language: sh
  executable: ticker.sh
  empty_param: ["first"]
  collected: true
  schedule: "*/5 * * * *"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  collected: false
- name: backup
  cluster_type: Redis
  language: sh
  executable: echo backup done
  collected: false
  schedule: "30 2 * * *"
"""


def poll(what: str, check, timeout: float = 20.0, every: float = 0.05):
    """Calls ``check`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """A running celery-service."""

    base: str
    config: Path
    proc: subprocess.Popen[bytes]
    flags: list[str] = field(default_factory=list)


def binary() -> Path:
    path = Path(os.environ.get("CS_BINARY") or REPO / "target/debug/celery-service")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"the celery-service binary is missing at {path}: run `cargo build`")
    return path


def start(tmp: Path, *flags: str) -> Iterator[Service]:
    collect = tmp / "collect"
    collect.mkdir()
    shutil.copy(HERE / "ticker.sh", collect / "ticker.sh")
    config = tmp / "tasks.yaml"
    config.write_text(TASKS)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary()), "run",
            "--external-task-config", str(config),
            "--collect-dir", str(collect),
            "--address", f"127.0.0.1:{port}",
            "--log-dir", str(tmp / "logs"),
            "--result-db-file", str(tmp / "results.db"),
            "--reload-debounce", "100ms",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        poll("the service to be ready", up, timeout=30)
        yield Service(base, config, proc, list(flags))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    yield from start(tmp_path)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Service]:
    yield from start(tmp_path, "--auth-token", "full-secret", "--read-token", "look-only")


def chromium() -> str | None:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if Path(path).is_file():
        return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must run the browser tests: apt-get install chromium")
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    path = chromium()
    if path is None:
        pytest.skip("!!! chromium is not installed (apt-get install chromium): browser tests SKIPPED !!!")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


# Every URL any page asked for, checked by test_no_request_leaves_loopback.
REQUESTED: list[str] = []


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    context.on("request", lambda r: REQUESTED.append(r.url))
    p = context.new_page()
    yield p
    context.close()
    hosts = {urlparse(u).hostname for u in REQUESTED if not u.startswith(("data:", "about:"))}
    assert hosts <= {"127.0.0.1"}, f"a page asked for something off loopback: {hosts}"
