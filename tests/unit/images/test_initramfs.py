from pathlib import Path

from testbed.images.initramfs import INIT, build


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    out, off = {}, 0
    while True:
        assert data[off : off + 6] == b"070701"
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = off + 110
        name = data[name_at : name_at + namesize - 1].decode()
        body_at = (name_at + namesize + 3) & ~3
        body = data[body_at : body_at + size]
        off = (body_at + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_initramfs_holds_busybox_modules_and_init(tmp_path: Path) -> None:
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF busybox")
    mods = tmp_path / "mods"
    (mods / "kernel/a").mkdir(parents=True)
    (mods / "kernel/a/one.ko").write_bytes(b"one")
    (mods / "kernel/a/two.ko").write_bytes(b"two!")
    entries = read_newc(build(bb, mods, ["kernel/a/two.ko", "kernel/a/one.ko"]))
    assert entries["bin/busybox"] == (0o100755, b"\x7fELF busybox")
    assert entries["lib/modules/two.ko"][1] == b"two!"
    assert entries["load-order"][1] == b"two.ko\none.ko\n"  # dependencies first, as given
    assert entries["init"] == (0o100755, INIT.encode())
    assert entries["newroot"][0] == 0o040755
