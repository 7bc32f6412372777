from pathlib import Path

import pytest

from testbed.vm import argv as qargv
from testbed.vm.caps import QemuCaps, parse

FIX = Path(__file__).parents[2] / "fixtures" / "qemu"


@pytest.fixture(scope="module")
def caps() -> QemuCaps:
    return parse((FIX / "help-7.2.txt").read_text(), (FIX / "device-help-7.2.txt").read_text())


def spec(**kw) -> qargv.VMSpec:
    base = dict(name="tb123abc-client", kernel=Path("/k/vmlinuz"), initrd=Path("/k/initrd.img"),
                root=Path("/k/root.img"), rundir=Path("/run/x/tb123abc"))
    base.update(kw)
    return qargv.VMSpec(**base)


def test_caps_parsed_from_saved_help(caps: QemuCaps) -> None:
    assert caps.version == "7.2.22"
    assert {"-accel", "-qmp", "-chardev", "-netdev", "-snapshot"} <= caps.options
    assert {"virtio-serial-pci", "virtserialport", "virtio-net-pci", "virtio-blk-pci"} <= caps.devices


def test_name_comes_first_and_carries_the_tag(caps: QemuCaps) -> None:
    argv = qargv.build(spec(), caps)
    assert argv[:3] == ["qemu-system-x86_64", "-name", "tb123abc-client,process=tb123abc-client"]


def test_root_is_copy_on_write_and_found_by_serial(caps: QemuCaps) -> None:
    argv = qargv.build(spec(), caps)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert any(d.startswith("file=/k/root.img,") and "snapshot=on" in d for d in drives)
    assert "virtio-blk-pci,drive=root,serial=tbroot" in argv


def test_accelerator_and_cpu(caps: QemuCaps) -> None:
    tcg = qargv.build(spec(accel="tcg"), caps)
    kvm = qargv.build(spec(accel="kvm"), caps)
    assert tcg[tcg.index("-accel") + 1] == "tcg" and tcg[tcg.index("-cpu") + 1] == "max"
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "host"


def test_agent_channel_qmp_and_serial(caps: QemuCaps) -> None:
    argv = qargv.build(spec(), caps)
    assert "socket,id=agent,path=/run/x/tb123abc/tb123abc-client.agent,server=on,wait=off" in argv
    assert "virtserialport,bus=vser0.0,chardev=agent,name=tb.agent" in argv
    assert argv[argv.index("-qmp") + 1] == "unix:/run/x/tb123abc/tb123abc-client.qmp,server=on,wait=off"
    assert argv[argv.index("-serial") + 1] == "file:/run/x/tb123abc/console-tb123abc-client.log"


def test_nics_are_taps_in_the_run_namespace(caps: QemuCaps) -> None:
    s = spec(netns="tb123abc", nics=(qargv.Nic("tb123abc-c0", "52:54:00:00:00:01", 9000),))
    argv = qargv.build(s, caps)
    assert argv[:4] == ["ip", "netns", "exec", "tb123abc"]
    assert "tap,id=net0,ifname=tb123abc-c0,script=no,downscript=no" in argv
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,host_mtu=9000" in argv


def test_kernel_cmdline_is_one_argument(caps: QemuCaps) -> None:
    argv = qargv.build(spec(cmdline=("foo=1",)), caps)
    cmdline = argv[argv.index("-append") + 1]
    assert "console=ttyS0" in cmdline and "panic=-1" in cmdline and cmdline.endswith("foo=1")


def test_unknown_device_is_refused(caps: QemuCaps) -> None:
    s = spec(extra=("-device", "no-such-device"))
    with pytest.raises(ValueError, match="no device no-such-device"):
        qargv.build(s, caps)


def test_unknown_option_is_refused(caps: QemuCaps) -> None:
    with pytest.raises(ValueError, match="no option -frobnicate"):
        qargv.build(spec(extra=("-frobnicate",)), caps)


def test_restored_guest_opens_its_overlay_and_waits_for_the_stream(caps: QemuCaps) -> None:
    argv = qargv.build(spec(root=Path("/run/x/o.qcow2"), root_format="qcow2", root_snapshot=False,
                            incoming="exec:zstd -q -d -c /c/state.zst", hostname="tb-client"), caps)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0].startswith("file=/run/x/o.qcow2,format=qcow2,") and "snapshot=on" not in drives[0]
    assert argv[argv.index("-incoming") + 1] == "exec:zstd -q -d -c /c/state.zst"
    assert "tb.hostname=tb-client" in argv[argv.index("-append") + 1]
    assert "-incoming" not in qargv.build(spec(), caps)
