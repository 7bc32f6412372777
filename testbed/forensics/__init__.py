"""Forensics from outside the frozen guest: a memory dump (testbed/vm/dump.py) read with drgn into
forensics.json, the state that explains a stall. Each part is read by a function of its own
(testbed/forensics/read.py); what could not be read is said, never guessed."""

from __future__ import annotations

from testbed.forensics.read import FILE, NAS_FILE, evidence_of, read_dump, summary

__all__ = ["FILE", "NAS_FILE", "evidence_of", "read_dump", "summary"]
