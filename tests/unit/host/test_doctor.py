"""`testbed doctor`: a missing host tool is named with the package that gives it, and makes the exit
non-zero; optional pieces only warn."""

import json
from pathlib import Path

import pytest

from testbed.host import doctor
from testbed.cli import main


def test_tools_missing_from_path_name_their_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    checks = {c.name: c for c in doctor.check_tools()}
    qemu = checks["tool qemu-system-x86_64"]
    assert qemu.status == "missing" and qemu.fix == "apt-get install qemu-system-x86"
    assert checks["tool mmdebstrap"].status == "missing"
    assert checks["tool ganesha.nfsd"].status == "warn"  # only the userspace NAS needs it
    assert checks["tool ganesha.nfsd"].fix == "apt-get install nfs-ganesha nfs-ganesha-vfs"


def test_exit_status_follows_missing_checks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    found = [doctor.Check("a", "ok", "fine"), doctor.Check("b", "warn", "slow", "do x")]
    monkeypatch.setattr("testbed.commands.doctor.run_checks", lambda say=None: found)
    assert main(["doctor", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    found.append(doctor.Check("qemu", "missing", "not on PATH", "apt-get install qemu-system-x86"))
    assert main(["doctor", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["checks"][-1]["fix"] == "apt-get install qemu-system-x86"


def test_missing_tool_error_points_to_doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed.host import proc
    from testbed.errors import MissingToolError

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError, match=r"apt-get install qemu-system-x86.*testbed doctor"):
        proc.need("qemu-system-x86_64")
