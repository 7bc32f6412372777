import pytest

from testbed.errors import ConfigError
from testbed.images.kmods import module_name, parse_modules_dep, select

# Lines from the pinned Debian 6.1 kernel's modules.dep.
DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/nfs/nfsv3.ko: kernel/fs/nfs/nfs.ko kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko kernel/fs/fscache/fscache.ko kernel/net/netfs/netfs.ko
kernel/fs/nfs/nfs.ko: kernel/fs/lockd/lockd.ko kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko kernel/fs/fscache/fscache.ko kernel/net/netfs/netfs.ko
kernel/fs/lockd/lockd.ko: kernel/net/sunrpc/sunrpc.ko kernel/fs/nfs_common/grace.ko
kernel/net/sunrpc/sunrpc.ko:
kernel/fs/nfs_common/grace.ko:
kernel/fs/fscache/fscache.ko: kernel/net/netfs/netfs.ko
kernel/net/netfs/netfs.ko:
kernel/drivers/block/virtio_blk.ko:
kernel/crypto/crc32c_generic.ko:
kernel/crypto/sha256_generic.ko: kernel/lib/crypto/libsha256.ko
kernel/lib/crypto/libsha256.ko:
"""


def test_closure_in_load_order() -> None:
    order = select(parse_modules_dep(DEP), ["nfsv3"], set(), "r.yaml")
    assert order[-1] == "kernel/fs/nfs/nfsv3.ko"
    pos = {p: i for i, p in enumerate(order)}
    assert pos["kernel/net/sunrpc/sunrpc.ko"] < pos["kernel/fs/lockd/lockd.ko"] < pos["kernel/fs/nfs/nfs.ko"]
    assert pos["kernel/net/netfs/netfs.ko"] < pos["kernel/fs/fscache/fscache.ko"]
    assert len(order) == len(set(order)) == 7


def test_folders_select_everything_below() -> None:
    order = select(parse_modules_dep(DEP), ["kernel/crypto/"], set(), "r.yaml")
    assert set(order) == {"kernel/crypto/crc32c_generic.ko", "kernel/crypto/sha256_generic.ko", "kernel/lib/crypto/libsha256.ko"}


def test_builtin_modules_are_skipped() -> None:
    assert select(parse_modules_dep(DEP), ["virtio_pci", "ext4"], {"virtio_pci"}, "r.yaml")[-1] == "kernel/fs/ext4/ext4.ko"


def test_unknown_module_names_the_recipe_field() -> None:
    with pytest.raises(ConfigError) as e:
        select(parse_modules_dep(DEP), ["ext4", "nfsd4"], set(), "images/nas/recipe.yaml")
    assert "images/nas/recipe.yaml: modules[1]" in str(e.value)


def test_module_name_normalises() -> None:
    assert module_name("kernel/drivers/virtio/virtio-pci.ko.xz") == "virtio_pci"
