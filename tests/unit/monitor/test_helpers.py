from testbed.monitor.helpers import parse

# What the script prints in a client with iscsid (two processes) and charon.
TEXT = """pid 301 iscsid
VmLck:\t     124 kB
VmRSS:\t    1880 kB
VmSwap:\t       0 kB
oom_score_adj -1000
pid 302 iscsid
VmLck:\t   13820 kB
VmRSS:\t   13900 kB
VmSwap:\t       0 kB
oom_score_adj -1000
pid 410 charon
VmLck:\t       0 kB
VmRSS:\t     212 kB
VmSwap:\t    5340 kB
oom_score_adj 0
"""


def test_helper_states_parse() -> None:
    got = parse(TEXT)
    assert [(p["pid"], p["name"]) for p in got] == [(301, "iscsid"), (302, "iscsid"), (410, "charon")]
    assert got[1]["VmLck_kB"] == 13820 and got[1]["oom_score_adj"] == -1000
    assert got[2]["VmSwap_kB"] == 5340 and got[2]["VmRSS_kB"] == 212


def test_a_process_matched_twice_is_listed_once() -> None:
    assert len(parse(TEXT + "pid 410 charon\nVmSwap:\t 1 kB\n")) == 3
