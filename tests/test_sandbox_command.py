"""`manage.py sandbox` started where a port it needs is taken."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from sandbox.management.commands.sandbox import free_port
from tests.conftest import ROOT


@pytest.mark.parametrize("option", ["--port", "--bridge-port"])
def test_a_taken_port_is_named_before_anything_starts(tmp_path, option):
    ports = {"--port": free_port(), "--bridge-port": free_port()}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bridge.settings", "DEBUG": "true"}
    env.pop("BRIDGE_SANDBOX", None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports[option] = taken.getsockname()[1]
        argv = [sys.executable, "manage.py", "sandbox", "--database", str(tmp_path / "s.sqlite3")]
        for name, number in ports.items():
            argv += [name, str(number)]
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"port {ports[option]} is in use" in result.stderr and option in result.stderr
    assert "Open the sandbox page" not in result.stdout
    assert "Traceback" not in result.stderr
