"""`vltava serve` refusing to start: one clear line on stderr and the documented exit code."""

import socket
import subprocess

import pytest

from conftest import vltava_bin


def run_serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(vltava_bin()), "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "RUST_LOG": "error"},
    )


def one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


def test_bad_argument_exits_2(tmp_path):
    r = run_serve("--no-such-flag")
    assert r.returncode == 2
    assert "--no-such-flag" in one_line(r.stderr)
    r = run_serve("--data-dir", str(tmp_path), "--set", "num.partitions=zero")
    assert r.returncode == 2
    assert "num.partitions" in one_line(r.stderr)
    r = run_serve("--data-dir", str(tmp_path), "--set", "no.such.setting=1")
    assert r.returncode == 2
    assert "no.such.setting" in one_line(r.stderr)


def test_locked_data_dir_exits_1(broker):
    data_dir = broker.data_dir
    r = run_serve("--listen", "127.0.0.1:0", "--data-dir", str(data_dir))
    assert r.returncode == 1
    assert "locked" in one_line(r.stderr)
    assert broker.is_running()


def test_port_in_use_exits_1(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = run_serve("--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 1
        assert f"127.0.0.1:{port}" in one_line(r.stderr)
    finally:
        s.close()


def test_uncreatable_and_read_only_data_dir_exit_1(tmp_path):
    r = run_serve("--listen", "127.0.0.1:0", "--data-dir", "/proc/vltava-cannot-exist")
    assert r.returncode == 1
    assert "/proc/vltava-cannot-exist" in one_line(r.stderr)
    # A read-only filesystem needs a mount; the test command runs as root, as CI does.
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.fail("cannot mount a read-only tmpfs (the e2e suite runs as root)")
    try:
        r = run_serve("--listen", "127.0.0.1:0", "--data-dir", str(mnt / "data"))
        assert r.returncode == 1
        assert "Read-only" in one_line(r.stderr)
    finally:
        subprocess.run(["umount", str(mnt)])
