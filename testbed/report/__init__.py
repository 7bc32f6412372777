"""Reporting: live progress on the terminal now; tables, HTML and comparisons later."""
