"""Matrix files: a base scenario, axes (field path -> values), exclude, include, repeat.

Expansion is deterministic (axes in file order, values in list order), and every case gets a
stable readable id such as `iscsi-mtu9000-mem96-anon-r2`. A case that makes the scenario invalid is
an error naming the matrix file, the case, and the axis values that made it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.config.scenario import LoadedScenario, build_scenario
from testbed.config.strict import from_dict, load_yaml
from testbed.errors import ConfigError

# How an axis value shows in a case id; other axes use their last path part and the value.
LABELS = {
    "storage.protocol": "{}",
    "workload.kind": "{}",
    "topology.links.*.mtu": "mtu{}",
    "client.mem_mb": "mem{}",
    "storage.nfs.version": "nfs{}",
    "client.vcpus": "cpu{}",
}


@dataclass(frozen=True)
class MatrixSpec:
    name: str
    base: Any  # a scenario path (relative to the matrix file) or an inline scenario mapping
    axes: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    exclude: tuple[dict[str, Any], ...] = ()
    include: tuple[dict[str, Any], ...] = ()
    repeat: int = 1
    description: str = ""

    def validate(self, source: str, path: str) -> None:
        if not isinstance(self.base, (str, dict)):
            raise ConfigError(source, "base", "must be a scenario path or an inline scenario mapping")
        for axis, values in self.axes.items():
            if not values:
                raise ConfigError(source, f"axes.{axis}", "needs at least one value")
            if len(set(map(repr, values))) != len(values):
                raise ConfigError(source, f"axes.{axis}", "repeats a value")
        for i, ex in enumerate(self.exclude):
            unknown = [k for k in ex if k not in self.axes]
            if unknown:
                raise ConfigError(source, f"exclude[{i}].{unknown[0]}", f"is not an axis (axes: {', '.join(self.axes)})")
        if self.repeat < 1:
            raise ConfigError(source, "repeat", "must be at least 1")


@dataclass(frozen=True)
class MatrixCase:
    id: str
    assignments: dict[str, Any]
    repeat_index: int
    loaded: LoadedScenario

    @property
    def axes_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.assignments.items())


@dataclass(frozen=True)
class Matrix:
    spec: MatrixSpec
    path: Path
    cases: tuple[MatrixCase, ...]


def _label(axis: str, value: Any) -> str:
    if isinstance(value, list):  # e.g. a `faults` axis: name the kinds (and modes)
        if not value:
            return "nofault"
        return "-".join(_label("", v.get("kind", "") + ("" if "mode" not in v else "-" + str(v["mode"]))) if isinstance(v, dict) else _label("", v) for v in value)
    fmt = LABELS.get(axis)
    text = str(value).lower()
    if fmt is None:
        fmt = re.sub(r"_(mb|s)$", "", axis.split(".")[-1].replace("*", "")) + "{}" if axis else "{}"
    return re.sub(r"[^a-z0-9.-]+", "", fmt.format(text).lower()).replace(".", "")


def case_id(assignments: dict[str, Any], axes: list[str], base_name: str, repeat_index: int, repeat: int) -> str:
    parts = [_label(a, assignments[a]) for a in axes if a in assignments]
    parts += [_label(k, v) for k, v in assignments.items() if k not in axes]
    cid = "-".join(p for p in parts if p) or base_name
    return f"{cid}-r{repeat_index}" if repeat > 1 else cid


def expand_assignments(spec: MatrixSpec) -> list[dict[str, Any]]:
    axes = list(spec.axes)
    combos = [dict(zip(axes, values)) for values in itertools.product(*(spec.axes[a] for a in axes))] if axes else [{}]
    kept = [c for c in combos if not any(all(c.get(k) == v for k, v in ex.items()) for ex in spec.exclude)]
    return kept + [dict(inc) for inc in spec.include]


def load_matrix(path: Path) -> Matrix:
    data = load_yaml(path)
    source = str(path)
    spec = from_dict(MatrixSpec, data, source)
    if isinstance(spec.base, str):
        base_path = (path.parent / spec.base).resolve()
        if not base_path.exists():
            raise ConfigError(source, "base", f"no scenario at {base_path}")
        base_data = load_yaml(base_path)
        if not isinstance(base_data, dict):
            raise ConfigError(str(base_path), "(top)", "a scenario must be a mapping")
    else:
        base_path, base_data = path, dict(spec.base)
    base_name = str(base_data.get("name", path.stem))
    cases: list[MatrixCase] = []
    seen: dict[str, int] = {}
    for assignments in expand_assignments(spec):
        for r in range(1, spec.repeat + 1):
            cid = case_id(assignments, list(spec.axes), base_name, r, spec.repeat)
            if cid in seen:
                seen[cid] += 1
                cid = f"{cid}-{seen[cid]}"
            else:
                seen[cid] = 1
            label = ", ".join(f"{k}={v}" for k, v in assignments.items()) or "the base scenario"
            where = f"{source}: case {cid} ({label})"
            try:
                named = {**base_data, "name": cid}
                loaded = build_scenario(named, base_path, where, assignments)
            except ConfigError as e:
                raise ConfigError(where, e.field, e.message) from None
            cases.append(MatrixCase(cid, assignments, r, loaded))
    return Matrix(spec, path, tuple(cases))


def is_matrix_file(path: Path) -> bool:
    data = load_yaml(path)
    return isinstance(data, dict) and ("axes" in data or "base" in data)
