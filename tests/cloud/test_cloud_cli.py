"""`nestor-cloud` against a live `nestor-cloud serve` subprocess on 127.0.0.1, port 0."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

HERE = pathlib.Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "cloud_brain.cli"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    return env


def _run(*args, timeout=30):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture
def live_server(tmp_path, task_files):
    config = tmp_path / "cloud.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "address": "127.0.0.1:50051",  # overridden by --address below
                "db_path": str(tmp_path / "cloud.db"),
                "model_dir": str(tmp_path / "models"),
                "task_files": task_files,
                "initial_model": "cloud_testlib:initial_model",
                "consolidate": "cloud_testlib:run_round",
                "grace_seconds": 1.0,
                "schedule": {"enabled": False},
            }
        )
    )
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config), "--address", "127.0.0.1:0", "--ready-file", str(ready)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)
    yield json.loads(ready.read_text())["address"], proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_status_json_and_models_commands(live_server, tmp_path):
    address, proc = live_server
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    result = _run("status", "--address", address, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert sorted(m["task"] for m in status["models"]) == ["arm", "crane"]
    assert all(m["status"] == "active" for m in status["models"])
    assert status["robots"] == [] and int(status["transitions_stored"]) == 0
    assert (tmp_path / "models" / "v1_arm.onnx").exists()

    health = _run("health", "--address", address, "--json")
    assert health.returncode == 0 and json.loads(health.stdout) == {
        "address": address,
        "service": "",
        "status": "SERVING",
    }

    table = _run("status", "--address", address)
    assert table.returncode == 0 and "model versions" in table.stdout

    listed = _run("models", "list", "--address", address, "--task", "crane", "--json")
    assert [m["task"] for m in json.loads(listed.stdout)["models"]] == ["crane"]

    rollback = _run("models", "rollback", "--address", address, "--task", "arm")
    assert rollback.returncode == 1 and "FAILED_PRECONDITION" in rollback.stderr
    promote = _run("models", "promote", "1", "--address", address, "--json")
    assert promote.returncode == 0 and json.loads(promote.stdout)["model"]["status"] == "active"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_unreachable_server_exits_2_with_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = pathlib.Path(sys.executable).with_name("nestor-cloud")  # the installed console script
    command = [str(script)] if script.exists() else CLI
    result = subprocess.run(
        [*command, "status", "--address", f"127.0.0.1:{port}", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot reach cloud brain" in result.stderr


def test_bad_config_exits_2_naming_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("max_workers: 4\n")
    result = _run("serve", "--config", str(config))
    assert result.returncode == 2 and "max_workers" in result.stderr


def _serve_config(tmp_path, task_files, name="second") -> pathlib.Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "db_path": str(tmp_path / f"{name}.db"),
                "model_dir": str(tmp_path / f"{name}_models"),
                "task_files": task_files,
                "initial_model": "cloud_testlib:initial_model",
                "consolidate": "cloud_testlib:run_round",
                "schedule": {"enabled": False},
            }
        )
    )
    return config


def _one_line(result, code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_port_in_use_touches_no_database(tmp_path, task_files):
    config = _serve_config(tmp_path, task_files)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = _run("serve", "--config", str(config), "--address", address)
    _one_line(result, 2, f"address: cannot bind {address}")
    assert not (tmp_path / "second.db").exists() and not (tmp_path / "second_models").exists()


def test_restore_of_a_file_that_is_not_a_database(tmp_path):
    junk = tmp_path / "backup.db"
    junk.write_bytes(b"this is not SQLite\n" * 100)
    result = _run("restore", "--from", str(junk), "--db", str(tmp_path / "restored.db"))
    _one_line(result, 1, "is not a nestor database")
    assert not (tmp_path / "restored.db").exists()


def test_restore_and_a_second_serve_refuse_the_database_of_a_running_server(live_server, tmp_path, task_files):
    address, proc = live_server
    db = tmp_path / "cloud.db"
    backup = tmp_path / "copy.db"
    assert _run("backup", "--out", str(backup), "--db", str(db)).returncode == 0
    before = db.read_bytes()
    result = _run("restore", "--from", str(backup), "--db", str(db), "--force")
    _one_line(result, 1, f"is held by a running cloud brain (pid {proc.pid})")
    assert db.read_bytes() == before
    config = _serve_config(tmp_path, task_files)
    second = _run("serve", "--config", str(config), "--db", str(db), "--address", "127.0.0.1:0")
    _one_line(second, 2, "is held by a running cloud brain")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    # Once the server is gone the same restore goes through.
    assert _run("restore", "--from", str(backup), "--db", str(db), "--force").returncode == 0


def test_version_and_defaults_in_help():
    from importlib.metadata import version

    result = _run("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"nestor-cloud {version('nestor-cloud-brain')}"
    helped = _run("serve", "--help")
    assert "(default: config/cloud.yaml)" in " ".join(helped.stdout.split())
    assert "(default: 5.0)" in " ".join(_run("status", "--help").stdout.split())
