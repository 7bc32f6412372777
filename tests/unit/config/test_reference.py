"""The scenario reference page is generated from the spec dataclasses: it must be current, and it must show
what the specs say (a field, its type and default, the comment its definition carries)."""

from pathlib import Path

from testbed.config import reference

REPO = Path(__file__).parents[3]


def test_the_scenario_reference_page_is_current() -> None:
    page = (REPO / "docs/scenario-reference.md").read_text()
    assert page == reference.markdown(), "stale: python -m testbed.config.reference docs/scenario-reference.md"


def test_the_reference_shows_fields_types_defaults_and_comments() -> None:
    text = reference.markdown()
    assert "| `client.boot` | `restore` \\| `cold` | `restore` | from the ready snapshot" in text
    assert "| `storage.nfs.timeo` | int | `100` | tenths of a second before an RPC retransmission |" in text
    assert "| `storage.protocol` |" in text and "one of aoe, iscsi, local, nbd, nfs" in text  # every protocol
    assert "### `nas-outage`" in text and "### `link-flap`" in text  # every fault kind
    assert "| `expect` |" in text and "| `faults[].at_s` | float | required | seconds after the pressure phase starts |" in text
