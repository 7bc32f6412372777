"""Matrix files: a base scenario, axes (field path -> values), exclude, include, repeat.

Expansion is deterministic (axes in file order, values in list order), and every case gets a
stable readable id such as `iscsi-mtu9000-mem96-anon-r2`. A case that makes the scenario invalid is
an error naming the matrix file, the case, and the axis values that made it.

A cell is one assignment of the axes; its cases differ only by their repeat index (`-r<N>`).
`Matrix.case(cell, r)` makes any repeat of a cell, so an adaptive run (`--until-ci`) can add repeats
with ids that continue the numbering.

A sysctl is an axis by its dotted name under `client.sysctl.`, e.g. `client.sysctl.vm.min_free_kbytes`;
the value `default` leaves the sysctl unset, i.e. at the kernel's own value (testbed/config/assign.py
folds such names, for axes and `--set` alike).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from testbed.config.scenario import LoadedScenario, build_scenario
from testbed.config.strict import from_dict, load_yaml
from testbed.errors import ConfigError
from testbed.kernels import ref as kernel_ref

# How an axis value shows in a case id; other axes use their last path part and the value.
LABELS = {
    "storage.protocol": "{}",
    "workload.kind": "{}",
    "topology.links.*.mtu": "mtu{}",
    "client.mem_mb": "mem{}",
    "storage.nfs.version": "nfs{}",
    "client.vcpus": "cpu{}",
    "client.sysctl.vm.min_free_kbytes": "minfree{}",
    "faults.0.mode": "{}",
    "client.kernel": "{}",
    "nas.kernel": "nas{}",
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
    # How the matrix's end-of-run pivot and HTML report lay it out: {rows: AXIS, cols: AXIS}
    # Assignments every case gets that are no axis (as --set would make them), e.g. a longer deadline
    set: dict[str, Any] = field(default_factory=dict)
    pivot: dict[str, str] = field(default_factory=lambda: {"rows": "storage.protocol", "cols": "topology.links.*.mtu"})

    def validate(self, source: str, path: str) -> None:
        extra = set(self.pivot) - {"rows", "cols"}
        if extra or len(self.pivot) != 2:
            raise ConfigError(source, "pivot", "must be {rows: AXIS, cols: AXIS}" + (f" (not {sorted(extra)[0]})" if extra else ""))
        if not isinstance(self.base, (str, dict)):
            raise ConfigError(source, "base", "must be a scenario path or an inline scenario mapping")
        for axis, values in self.axes.items():
            if not values:
                raise ConfigError(source, f"axes.{axis}", "needs at least one value")
            if len(set(map(repr, values))) != len(values):
                raise ConfigError(source, f"axes.{axis}", "repeats a value")
        for key in self.set:
            if key in self.axes:
                raise ConfigError(source, f"set.{key}", "is also an axis: give it one place")
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
    cell: int = 0  # index of its cell (its assignments) in Matrix.cells

    @property
    def axes_label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.assignments.items())


@dataclass(frozen=True)
class Cell:
    """One assignment of the axes: the cases that differ only by their repeat index."""

    assignments: dict[str, Any]
    stem: str  # the case id without its repeat suffix
    dup: int = 1  # >1: an earlier cell has the same stem; the ids then end in -<dup>

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.assignments.items()) or "the base scenario"

    def case_id(self, r: int, suffixed: bool) -> str:
        cid = f"{self.stem}-r{r}" if suffixed else self.stem
        return f"{cid}-{self.dup}" if self.dup > 1 else cid


@dataclass(frozen=True)
class Matrix:
    spec: MatrixSpec
    path: Path
    cases: tuple[MatrixCase, ...]
    cells: tuple[Cell, ...] = ()
    base_data: dict[str, Any] = field(default_factory=dict)
    base_path: Path | None = None
    suffixed: bool = False  # case ids end in -r<N> (a repeat, or a --max-repeat, above 1)
    fixed: dict[str, Any] = field(default_factory=dict)  # assignments every case gets but that are not axes (--set)

    @property
    def repeat(self) -> int:
        """Repeats per cell in `cases` (the file's `repeat:` or its override)."""
        return max((c.repeat_index for c in self.cases), default=1)

    def case(self, cell: int, r: int) -> MatrixCase:
        """Repeat r of a cell, built and checked like the cases of the file (any r: adaptive runs add repeats)."""
        c = self.cells[cell]
        cid = c.case_id(r, self.suffixed)
        source = str(self.path)
        where = f"{source}: case {cid} ({c.label})"
        try:
            named = {**self.base_data, "name": cid}
            loaded = build_scenario(named, self.base_path or self.path, where,
                                    {**self.fixed, **c.assignments})
        except ConfigError as e:
            raise ConfigError(where, e.field, e.message) from None
        return MatrixCase(cid, c.assignments, r, loaded, cell)


def _label(axis: str, value: Any) -> str:
    if isinstance(value, list):  # e.g. a `faults` axis: name the kinds (and modes)
        if not value:
            return "nofault"
        return "-".join(_label("", v.get("kind", "") + ("" if "mode" not in v else "-" + str(v["mode"]))) if isinstance(v, dict) else _label("", v) for v in value)
    fmt = LABELS.get(axis)
    text = str(value).lower()
    if axis in ("client.kernel", "nas.kernel"):
        text = kernel_ref.slug(str(value)).lower()
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


def load_base(path: Path, base: Any) -> tuple[Path, dict[str, Any], str]:
    """A matrix's base scenario: (its path, its parsed data, its name)."""
    if isinstance(base, str):
        base_path = (path.parent / base).resolve()
        if not base_path.exists():
            raise ConfigError(str(path), "base", f"no scenario at {base_path}")
        base_data = load_yaml(base_path)
        if not isinstance(base_data, dict):
            raise ConfigError(str(base_path), "(top)", "a scenario must be a mapping")
    else:
        base_path, base_data = path, dict(base)
    return base_path, base_data, str(base_data.get("name", path.stem))


def make_cells(assignments: list[dict[str, Any]], axes: list[str], base_name: str) -> tuple[Cell, ...]:
    """Cells with their id stems; cells whose labels collide are told apart by a -<k> at the end."""
    seen: dict[str, int] = {}
    cells = []
    for a in assignments:
        stem = case_id(a, axes, base_name, 0, 1)
        seen[stem] = seen.get(stem, 0) + 1
        cells.append(Cell(a, stem, seen[stem]))
    return tuple(cells)


def load_matrix(path: Path, repeat: int | None = None, max_repeat: int | None = None) -> Matrix:
    """The matrix file's cases. `repeat` overrides the file's `repeat:`; `max_repeat` (an adaptive run's
    cap) only makes the ids carry -r<N> when the file alone would not (repeats are added later)."""
    data = load_yaml(path)
    source = str(path)
    spec = from_dict(MatrixSpec, data, source)
    if repeat is not None:
        if repeat < 1:
            raise ConfigError(source, "repeat", f"--repeat {repeat}: must be at least 1")
        spec = replace(spec, repeat=repeat)
    base_path, base_data, base_name = load_base(path, spec.base)
    cells = make_cells(expand_assignments(spec), list(spec.axes), base_name)
    suffixed = max(spec.repeat, max_repeat or 1) > 1
    m = Matrix(spec, path, (), cells, base_data, base_path, suffixed, dict(spec.set))
    cases = [m.case(i, r) for i in range(len(cells)) for r in range(1, spec.repeat + 1)]
    return replace(m, cases=tuple(cases))


def axis_matrix(path: Path, axis: str, values: list[Any], repeat: int, fixed: dict[str, Any] | None = None) -> Matrix:
    """A scenario file with one axis, a cell per value, built on demand (`Matrix.case`; `cases` is empty):
    `testbed search`'s probes. Ids as a matrix's (`mem104-r2`), a value's dot as `p` (`loss0p5-r1`)."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(str(path), "(top)", "a scenario must be a mapping")
    name = str(data.get("name", path.stem))
    spec = MatrixSpec(name=name, base=str(path), axes={axis: tuple(values)}, repeat=repeat)

    def stem(v: Any) -> str:
        return case_id({axis: str(v).replace(".", "p") if isinstance(v, float) else v}, [axis], name, 0, 1)

    cells = tuple(Cell({axis: v}, stem(v)) for v in values)
    return Matrix(spec, path, (), cells, data, path.resolve(), repeat > 1, dict(fixed or {}))


def is_matrix_file(path: Path) -> bool:
    data = load_yaml(path)
    return isinstance(data, dict) and ("axes" in data or "base" in data)
