"""Parsers of the protocols' own counters, on text as the guest tools print it."""

from testbed.storage.aoe import parse_aoe_stat
from testbed.storage.iscsi import parse_session_stats
from testbed.storage.nfs import NfsSpec, mount_options, parse_mountstats

MOUNTSTATS = """\
device 10.201.0.2:/srv/nfs mounted on /mnt/nas with fstype nfs statvers=1.1
\topts:\trw,vers=3,rsize=131072,wsize=131072,namlen=255,acregmin=3,hard,proto=tcp,timeo=100,retrans=2,sec=sys
\txprt:\ttcp 876 1 2 0 0 48311 48309 0 1392151 0 2 16 7
\tper-op statistics
\t        NULL: 1 1 0 44 24 0 0 1 0
\t     GETATTR: 3 3 0 348 336 0 1 1 0
\t       WRITE: 30120 30131 2 4011893664 3614400 102 9137 9456 0
\t        READ: 18160 18160 0 2251840 2380152336 1 5012 5101 0
"""


def test_mountstats() -> None:
    got = parse_mountstats(MOUNTSTATS)
    assert got["nfs_retrans"] == 11 and got["nfs_major_timeouts"] == 2 and got["nfs_ops"] == 48284
    assert got["xprt"].startswith("xprt:\ttcp 876") or got["xprt"].startswith("xprt:")


SESSION_STATS = """\
Stats for session [sid: 1, target: iqn.2026-11.org.netswap:tb3bf120-target, portal: 10.201.0.2,3260]
iSCSI SNMP:
\ttxdata_octets: 786656980
\trxdata_octets: 610398608
\tnoptx_pdus: 0
\tscsicmd_pdus: 23249
\tdataout_pdus: 3353
iSCSI Extended Stats:
\ttimeout_err: 0
\tdigest_err: 0
"""


def test_session_stats() -> None:
    assert parse_session_stats(SESSION_STATS) == {
        "iscsi_txdata_octets": 786656980, "iscsi_rxdata_octets": 610398608, "iscsi_scsicmd_pdus": 23249,
        "iscsi_dataout_pdus": 3353, "iscsi_timeout_err": 0, "iscsi_digest_err": 0}


def test_aoe_stat() -> None:
    text = "      e0.1         0.268GB   eth0 1024  up\n      e1.0         0.000GB   eth0 1024  down,closewait\n"
    got = parse_aoe_stat(text)
    assert got["e0.1"]["state"] == "up" and got["e1.0"]["state"].startswith("down") and got["e0.1"]["ifaces"] == "eth0"


def test_nfs_mount_options() -> None:
    assert mount_options(NfsSpec(version="3")) == "vers=3,proto=tcp,hard,timeo=100,nolock"
    assert mount_options(NfsSpec(version="4.2", wsize=65536)) == "vers=4.2,proto=tcp,hard,timeo=100,wsize=65536"


def test_nbd_client_status() -> None:
    from testbed.storage.nbd import parse_client_status

    text = "pid 231\nVmLck: 2816 kB\nVmRSS: 2816 kB\noom_score_adj -1000\n"
    assert parse_client_status(text) == {"nbd_client_pids": [231], "nbd_client_vmlck_kb": 2816,
                                         "nbd_client_vmrss_kb": 2816, "nbd_client_oom_score_adj": -1000}
    assert parse_client_status("") == {"nbd_client_pids": []}  # gone: nothing protects the path


def test_nbd_server_conf_and_service() -> None:
    from testbed.storage.nbd import parse_server_pids, server_conf

    conf = server_conf("tb", 10809, "10.201.0.3", "/srv/nbd.img")
    assert "[tb]\n    exportname = /srv/nbd.img" in conf and "listenaddr = 10.201.0.3" in conf
    assert parse_server_pids("412\n413\n").alive and not parse_server_pids("").alive


def test_nbd_needs_a_nas_vm() -> None:
    from pathlib import Path

    import pytest

    from testbed.config.scenario import load_scenario
    from testbed.errors import ConfigError

    repo = Path(__file__).parents[3]
    load_scenario(repo / "scenarios/nbd-swap.yaml")
    with pytest.raises(ConfigError, match="nas.backend: nbd needs nas.backend vm"):
        load_scenario(repo / "scenarios/nbd-swap.yaml", ["nas.backend=netns"])
    with pytest.raises(ConfigError, match="storage.nbd.export: must be a plain name"):
        load_scenario(repo / "scenarios/nbd-swap.yaml", ["storage.nbd.export=a b"])
