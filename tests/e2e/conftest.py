"""Harness for the Vltava end-to-end suite.

Every test talks to a real `vltava serve` process listening on a free loopback port with its own
temporary data directory. Fixtures:

* ``broker``          - a broker with default settings, started for the test and stopped after it.
* ``broker_factory``  - ``broker_factory(**settings)`` starts a broker with ``--set key=value``
                        for each setting (underscores in keyword names are *not* translated: pass
                        a dict, e.g. ``broker_factory({"message.max.bytes": 10000})``).

A ``Broker`` can be stopped and restarted on the same port and data directory
(``restart(sig=signal.SIGTERM)`` or ``restart(sig=signal.SIGKILL)``).

The binary comes from ``$VLTAVA_BIN`` (default: ``<repo>/target/debug/vltava``).
Every wait is bounded; on a failed start the error carries the tail of the broker's stderr.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "vltava"

# A clean shutdown on SIGTERM exits 0 (143 / -15: the process let the signal end it, also orderly).
GRACEFUL_EXIT_CODES = (0, 143, -signal.SIGTERM)
START_TIMEOUT_S = float(os.environ.get("VLTAVA_START_TIMEOUT", "30"))
STOP_TIMEOUT_S = float(os.environ.get("VLTAVA_STOP_TIMEOUT", "15"))
STDERR_TAIL_BYTES = 6000


def vltava_bin() -> Path:
    return Path(os.environ.get("VLTAVA_BIN", str(DEFAULT_BIN))).resolve()


_PORTS_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port that was free a moment ago (the broker binds it right after) and that this test
    process has not handed out before: the kernel readily gives the same ephemeral port to two binds in a
    row once the first socket is closed, and a cluster picks all its ports before any node binds them
    (a node's client port once came out equal to another node's controller port)."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port
    raise RuntimeError("no loopback port left that this test process has not used")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_ALL_PROCS: list[subprocess.Popen] = []


@atexit.register
def _kill_leftovers() -> None:
    # Last resort if pytest is interrupted before fixture teardown: no broker outlives the run.
    for proc in _ALL_PROCS:
        if proc.poll() is None:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except Exception:
                pass


class BrokerStartError(RuntimeError):
    pass


class Broker:
    """One broker process, restartable on the same port and data directory."""

    def __init__(self, workdir: Path, settings: Mapping[str, object] | None = None, port: int | None = None):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.settings = dict(settings or {})
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.last_term_exit_code: int | None = None
        self.stopped_by_harness = False
        self._stderr_path: Path | None = None
        self._stderr_file = None

    # ------------------------------------------------------------------ info
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = [str(vltava_bin()), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir)]
        for key, value in self.settings.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            cmd += ["--set", f"{key}={value}"]
        return cmd

    def stderr_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        """Tail of the stderr of every start so far (each start appends to its own file)."""
        chunks = []
        for path in sorted(self.workdir.glob("stderr-*.log")):
            try:
                chunks.append(f"--- {path.name} ---\n" + path.read_text(errors="replace"))
            except OSError:
                pass
        text = "\n".join(chunks)
        return text[-limit:]

    # ------------------------------------------------------------ lifecycle
    def start(self, timeout: float = START_TIMEOUT_S) -> "Broker":
        assert not self.is_running(), "broker already running"
        binary = vltava_bin()
        if not binary.exists():
            raise BrokerStartError(f"broker binary {binary} not found: run `cargo build -p vltava-cli` or set VLTAVA_BIN")
        # A restart right after a kill can race the kernel releasing the port: retry only on EADDRINUSE.
        for attempt in range(5):
            self._spawn()
            try:
                self._wait_ready(timeout)
                return self
            except BrokerStartError:
                tail = self._current_stderr().lower()
                addr_in_use = "address already in use" in tail or "os error 98" in tail or "addrinuse" in tail
                if addr_in_use and not self.is_running() and attempt < 4:
                    time.sleep(1.0)
                    continue
                self._force_stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        self.starts += 1
        self.stopped_by_harness = False
        self._stderr_path = self.workdir / f"stderr-{self.starts:02d}.log"
        self._stderr_file = open(self._stderr_path, "wb")
        # The broker reads VLTAVA_* variables as settings (VLTAVA_NUM_PARTITIONS=3 ...): the suite's own
        # variables (VLTAVA_BIN, VLTAVA_E2E_*) must not reach it. Settings go through --set only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("VLTAVA_")}
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._stderr_file,
            stderr=self._stderr_file,
            env=env,
            start_new_session=True,
        )
        _ALL_PROCS.append(self.proc)

    def _current_stderr(self) -> str:
        if not self._stderr_path:
            return ""
        try:
            return self._stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerStartError(
                    f"broker exited with code {self.proc.returncode} before accepting connections\n"
                    f"command: {' '.join(self.command())}\nstderr tail:\n{self._current_stderr()[-STDERR_TAIL_BYTES:]}"
                )
            if port_accepts(self.host, self.port):
                return
            time.sleep(0.05)
        raise BrokerStartError(
            f"broker did not accept connections on {self.bootstrap} within {timeout:.0f}s\n"
            f"command: {' '.join(self.command())}\nstderr tail:\n{self._current_stderr()[-STDERR_TAIL_BYTES:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """Send `sig`; wait up to `timeout`, then SIGKILL. Returns the exit code (None if not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopped_by_harness = True
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(
                    f"broker did not exit within {timeout:.0f}s of signal {signal.Signals(sig).name}; killed\n"
                    f"stderr tail:\n{self.stderr_tail()}"
                )
        code = self.proc.returncode
        self._close_log()
        return code

    def kill(self) -> int | None:
        """SIGKILL, no chance to flush anything."""
        return self.stop(signal.SIGKILL, timeout=10)

    def restart(self, sig: int = signal.SIGTERM, timeout: float = START_TIMEOUT_S) -> "Broker":
        """Stop with `sig` (SIGTERM: graceful, SIGKILL: crash) and start again on the same port and data dir."""
        assert self.is_running(), f"broker died before the restart (code {self.proc.returncode if self.proc else None})"
        code = self.stop(sig)
        if sig == signal.SIGTERM:
            self.last_term_exit_code = code
            assert code in GRACEFUL_EXIT_CODES, (
                f"broker exited with code {code} on SIGTERM (not a clean shutdown)\nstderr tail:\n{self.stderr_tail()}"
            )
        return self.start(timeout=timeout)

    def _force_stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except Exception:
                pass
        self._close_log()

    def _close_log(self) -> None:
        if self._stderr_file is not None:
            try:
                self._stderr_file.close()
            except OSError:
                pass
            self._stderr_file = None


class BrokerFactory:
    def __init__(self, base: Path):
        self.base = base
        self.brokers: list[Broker] = []

    def __call__(self, settings: Mapping[str, object] | None = None, start: bool = True) -> Broker:
        workdir = Path(tempfile.mkdtemp(prefix=f"broker{len(self.brokers)}-", dir=self.base))
        broker = Broker(workdir, settings)
        self.brokers.append(broker)
        if start:
            broker.start()
        return broker

    def close(self) -> list[str]:
        problems = []
        for broker in self.brokers:
            if broker.proc is None:
                continue
            died = broker.proc.poll() is not None and not broker.stopped_by_harness
            try:
                code = broker.stop(signal.SIGTERM)
            except AssertionError as exc:
                problems.append(str(exc))
                continue
            if died:
                problems.append(
                    f"broker on {broker.bootstrap} died during the test with code {code}\nstderr tail:\n{broker.stderr_tail()}"
                )
            elif code not in GRACEFUL_EXIT_CODES:
                problems.append(
                    f"broker on {broker.bootstrap} exited with code {code} on SIGTERM (not a clean shutdown)\n"
                    f"stderr tail:\n{broker.stderr_tail()}"
                )
        return problems


def _keep_dirs() -> bool:
    return os.environ.get("VLTAVA_E2E_KEEP", "") not in ("", "0")


@pytest.fixture
def broker_factory(request, tmp_path_factory) -> Iterator[BrokerFactory]:
    base = tmp_path_factory.mktemp("vltava")
    factory = BrokerFactory(base)
    yield factory
    problems = factory.close()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed:
        for broker in factory.brokers:
            print(f"\n===== broker {broker.bootstrap} stderr (tail) =====\n{broker.stderr_tail()}")
    if not _keep_dirs() and not failed:
        shutil.rmtree(base, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_report_header(config):
    binary = vltava_bin()
    return [f"vltava binary: {binary} ({'present' if binary.exists() else 'MISSING'})"]
