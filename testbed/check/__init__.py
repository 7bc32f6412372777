"""Verdicts from the history and timeline, and evidence collection (sysrq dumps, console excerpts)."""
