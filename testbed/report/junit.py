"""JUnit XML for CI: one testcase per case; a failure verdict or a mismatch with `expect` is a
failure, `unknown` (the testbed itself failed) is an error."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from testbed.store.index import CaseRecord
from testbed.check.verdict import is_ok


def write(cases: list[CaseRecord], run_id: str, out: Path) -> None:
    suite = ET.Element("testsuite", name=f"netswap-testbed {run_id}", tests=str(len(cases)))
    failures = errors = 0
    total = 0.0
    for c in cases:
        v = c.verdict
        wall = float(v.get("figures", {}).get("case_wall_s") or 0)
        total += wall
        tc = ET.SubElement(suite, "testcase", classname=str(v.get("scenario", "")), name=c.case_id, time=f"{wall:.1f}")
        reasons = "\n".join(v.get("reasons", []))
        if v["verdict"] == "unknown" and v.get("expected") != "unknown":
            errors += 1
            ET.SubElement(tc, "error", message=f"unknown: {reasons[:200]}", type="unknown").text = reasons
        elif not is_ok(v["verdict"], v.get("expected")):
            failures += 1
            want = v.get("expected") or "recovered"
            ET.SubElement(tc, "failure", message=f"{v['verdict']} (expected {want})", type=v["verdict"]).text = reasons
        ET.SubElement(tc, "system-out").text = f"evidence: {c.path}"
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    suite.set("time", f"{total:.1f}")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    out.write_text(ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
