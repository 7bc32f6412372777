"""The IPsec capture counts storage packets in clear between the client and the NAS only: the
testbed's own NAS probe (a TCP connect from the switch's address to the storage port, once a second)
is counted apart. Recorded: 400 packets from the switch during `ipsec-ikev2.yaml`, 2026-11-27."""

from pathlib import Path

from testbed.faults.ipsec import count_capture

FIX = Path(__file__).parents[2] / "fixtures/capture/ipsec-ikev2-with-nas-probe.txt"


def test_the_nas_probe_is_not_clear_storage_traffic() -> None:
    c = count_capture(FIX.read_text().splitlines(), "10.201.0.1", "10.201.0.2", (2049, 111))
    assert c == {"capture_packets": 400, "capture_esp": 382, "capture_clear_storage": 0,
                 "capture_storage_port_other": 12}


def test_clear_nfs_between_client_and_nas_is_counted() -> None:
    lines = ["20:51:45.1 IP 10.201.0.1.871 > 10.201.0.2.2049: Flags [P.], seq 1:141, length 140: NFS request",
             "20:51:45.2 IP 10.201.0.2.2049 > 10.201.0.1.871: Flags [.], ack 141, length 0",
             "20:51:45.3 IP 10.201.0.1 > 10.201.0.2: ESP(spi=0xc39d738c,seq=0x2), length 1480",
             "20:51:45.4 IP 10.201.0.254 > 10.201.0.1: ICMP echo request, id 1, seq 6, length 16",
             "20:51:45.5 IP 10.201.0.1.500 > 10.201.0.2.500: isakmp: child_sa  inf2"]
    c = count_capture(lines, "10.201.0.1", "10.201.0.2", (2049, 111))
    assert (c["capture_esp"], c["capture_clear_storage"], c["capture_storage_port_other"]) == (1, 2, 0)
