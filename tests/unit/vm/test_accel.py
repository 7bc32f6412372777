import json
from pathlib import Path

import pytest

from testbed.errors import AccelError
from testbed.images.cache import Image
from testbed.vm import accel

IMAGE = Image("client", "abc", "6.1.0-50-amd64", "linux-image-6.1.0-50-amd64=6.1.176-1", 1, "now", 1.0, "/nowhere")


@pytest.fixture
def cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "_key", lambda image: "key")
    monkeypatch.setattr(accel, "kvm_usable_device", lambda: True)
    monkeypatch.setattr(accel.os.path, "exists", lambda p: True)

    def write(choice: str) -> None:
        (tmp_path / "accel-probe.json").write_text(json.dumps(
            {"key": {"accel": choice, "reason": f"probe said {choice}", "probed_at": "2026-11-26", "probe_seconds": 20.0}}))

    def no_probe(*a, **k):
        raise AssertionError("must not probe when the answer is cached")

    monkeypatch.setattr(accel, "probe_kvm", no_probe)
    return write


def test_tcg_needs_no_probe() -> None:
    assert accel.choose("tcg", IMAGE).accel == "tcg"


def test_auto_uses_the_cached_probe(cached) -> None:
    cached("tcg")
    assert accel.choose("auto", IMAGE).accel == "tcg"
    cached("kvm")
    assert accel.choose("auto", IMAGE).accel == "kvm"


def test_forced_kvm_fails_clearly_when_the_probe_failed(cached) -> None:
    cached("tcg")
    with pytest.raises(AccelError, match="--accel kvm: KVM cannot run this guest here.*use --accel tcg"):
        accel.choose("kvm", IMAGE)


def test_probe_result_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "_key", lambda image: "key")
    monkeypatch.setattr(accel, "kvm_usable_device", lambda: True)
    monkeypatch.setattr(accel.os.path, "exists", lambda p: True)
    calls = []
    monkeypatch.setattr(accel, "probe_kvm", lambda image: calls.append(1) or (False, "hung", 20.0))
    first = accel.choose("auto", IMAGE, say=lambda m: None)
    second = accel.choose("auto", IMAGE, say=lambda m: None)
    assert first.accel == second.accel == "tcg" and "did not reach ready" in first.reason
    assert calls == [1]


def test_no_dev_kvm_means_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel.os.path, "exists", lambda p: False)
    assert accel.choose("auto", IMAGE).reason == "no /dev/kvm on this host"
    with pytest.raises(AccelError, match="no /dev/kvm"):
        accel.choose("kvm", IMAGE)
