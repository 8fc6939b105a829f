"""The bench document (bench.json, what `gmemtest bench` measured in one run), the targets
its figures are held to, and its reports: the terminal's tables and Markdown. The targets are
written here once; every report shows them from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from . import page, phases


class Comparison(TypedDict):
    """An upstream selftest against gmemtest's equivalent, each a fresh process (the guest)."""

    selftest: str
    selftest_seconds: float
    gmemtest_seconds: float
    selftest_status: int
    gmemtest_status: int
    gmemtest_tests_seconds: NotRequired[float]  # the tests' own time inside the process


class Rate(TypedDict):
    """Conversion round trips of one size in a while (the guest)."""

    size: int
    round_trips: int
    seconds: float


class Conversion(TypedDict):
    via: str
    python: list[Rate]
    c: list[Rate]
    python_bare: NotRequired[list[Rate]]  # the compiled call alone in a Python loop (4K)


class Walls(TypedDict):
    """The main job's suites, wall seconds: after filling the bytecode cache, warm, serial."""

    first: float
    warm: float
    serial: float


class EditLoop(TypedDict, total=False):
    """Edit a function, then the verdict of the tests covering it; the same, whole suite."""

    edited: str
    picked: int
    why: str
    affected_seconds: float
    affected_rebuild_seconds: float
    affected_tests: int
    whole_seconds: float
    whole_rebuild_seconds: float
    whole_tests: int


class Document(TypedDict, total=False):
    """bench.json: what one run of `gmemtest bench` measured (gmemtest.workflows.bench writes
    it; the guest's part comes from vmimages/bench/test_bench.py)."""

    machine: dict[str, Any]
    cmdline: list[str]
    accel: str
    kernel: str
    patches: list[str]
    objects_cold: int
    cold_build_seconds: float
    warm_rebuild_seconds: float
    boot_to_init_seconds: float
    boot_to_first_test_seconds: float
    pycache_fill_seconds: float
    suites_wall_seconds: Walls
    suite_boots_side_by_side: int
    warm_boot_pieces: dict[str, float] | None
    bench_boot_pieces: dict[str, float] | None
    edit_loop: EditLoop
    comparison: list[Comparison]
    conversion: Conversion
    agent: dict[str, float]
    fixed_costs: dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One figure's limit on this machine (TCG, 2 cores), from the issues that asked for it."""

    label: str
    limit: float
    unit: str  # "x" (a ratio), "s", "%" (a share) or "" (a count)

    def shown(self, value: float) -> str:
        if self.unit == "%":
            return f"{value:.0%}"
        if self.unit == "x":
            return f"{value:.2f}x"
        return f"{value:g} s" if self.unit == "s" else f"{value:g}"

    def row(self, value: float, floor: float | None = None) -> list[str]:
        return [self.label, self.shown(self.limit), self.shown(value),
                "-" if floor is None else self.shown(floor),
                "yes" if value <= self.limit else "no"]


TARGETS = {
    "equivalents_ratio": Target("gmemtest equivalents / selftests", 0.7, "x"),
    "conversion_ratio_4k": Target("C / Python conversion round trips (4K)", 1.6, "x"),
    "objects": Target("kernel objects, default fragments", 850, ""),
    "parallel_ratio": Target("main job suites side by side / one at a time", 0.65, "x"),
    "first_boot_ratio": Target("first boot's suites / warm boot's", 1.2, "x"),
    "boot_to_first_result": Target("QEMU start to first result (main job boot)", 3.0, "s"),
    "collection_share": Target("collecting the suite / QEMU start to first result", 0.10, "%"),
    "bench_first_result": Target("QEMU start to first result (bench boot)", 3.0, "s"),
    "edit_loop": Target("edit -> verdict of the covering tests, both modes", 15.0, "s"),
    "edit_loop_share": Target("... / the same with the whole suite", 0.25, "x"),
    "warm_rebuild": Target("rebuild after touching guest_memfd.c", 60.0, "s"),
}


def _rate(rows: list[Rate]) -> dict[int, float]:
    return {r["size"]: r["round_trips"] / r["seconds"] for r in rows}


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            return f"{n >> shift}{unit}"
    return str(n)


def tables(r: Document) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table of the report."""
    m = r["machine"]
    out = [("Run", ["what", "value"], [
        ["machine", f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"],
        *([["accelerator", r["accel"]]] if "accel" in r else []),
        ["kernel", r["kernel"]],  # its label says the patch set and how many patches
        *([["command line", " ".join(r["cmdline"])]] if "cmdline" in r else []),
        *([["python (host and guest)", m["python"]]] if "python" in m else [])])]
    comp = r.get("comparison", [])
    rows = [[c["selftest"], f"{c['selftest_seconds']:.2f}", f"{c['gmemtest_seconds']:.2f}",
             f"{c['gmemtest_seconds'] / c['selftest_seconds']:.1f}x"
             if c["selftest_seconds"] else "-",
             f"{c['selftest_status']}/{c['gmemtest_status']}"] for c in comp]
    if comp:
        st = sum(c["selftest_seconds"] for c in comp)
        gt = sum(c["gmemtest_seconds"] for c in comp)
        rows.append(["total", f"{st:.2f}", f"{gt:.2f}", f"{gt / st:.1f}x", ""])
    if rows:
        out.append(("Selftests against gmemtest (wall seconds, fresh process each)",
                    ["upstream selftest", "selftest s", "gmemtest s", "ratio", "exit (C/py)"],
                    rows))
    conv = r.get("conversion")
    if conv:
        py, c = _rate(conv["python"]), _rate(conv["c"])
        out.append((f"Conversion round trips per second (via {conv['via']})",
                    ["size", "Python", "C", "C/Python"],
                    [[_size(s), f"{py[s]:.0f}", f"{c[s]:.0f}", f"{c[s] / py[s]:.2f}x"]
                     for s in py if s in c]
                    + [[f"{_size(s)}, the compiled call alone", f"{n:.0f}", f"{c[s]:.0f}",
                        f"{c[s] / n:.2f}x"] for s, n in _rate(conv.get("python_bare", [])).items()
                       if s in c]))
    other = []
    if "agent" in r:
        other.append(["guest agent accesses (KVM_RUN exits) per second",
                      f"{r['agent']['accesses'] / r['agent']['seconds']:.0f}"])
    for value, label in ((r.get("cold_build_seconds"), "cold kernel build, ccache off (s)"),
                         (r.get("warm_rebuild_seconds"),
                          "rebuild after touching guest_memfd.c (s)"),
                         (r.get("boot_to_init_seconds"), "QEMU start to the guest init (s)"),
                         (r.get("boot_to_first_test_seconds"),
                          "QEMU start to the first test (s)")):
        if value is not None:
            other.append([label, str(value)])
    fixed = r.get("fixed_costs", {})
    for key in ("python_start_seconds", "python_start_without_site_seconds",
                "import_pytest_seconds", "import_gmemtest_seconds",
                "collect_all_tests_seconds"):
        if key in fixed:
            other.append([f"guest: {key.removesuffix('_seconds').replace('_', ' ')} (s)",
                          str(fixed[key])])
    walls = r.get("suites_wall_seconds")
    if walls:
        other += [["main job suites, first boot after filling the bytecode cache (wall s)",
                   str(walls["first"])],
                  ["main job suites, warm (wall s)", str(walls["warm"])],
                  ["main job suites, one boot at a time (wall s)", str(walls["serial"])],
                  ["filling the guest bytecode cache from empty (s)",
                   str(r["pycache_fill_seconds"])]]
    if "objects_cold" in r:
        other.append(["kernel objects compiled from nothing", str(r["objects_cold"])])
    if other:
        out.append(("Other measurements", ["what", "value"], other))
    warm_p, bench_p = r.get("warm_boot_pieces"), r.get("bench_boot_pieces")
    if warm_p or bench_p:
        names = [*phases.PIECES, "to first test", "to first result"]
        out.append(("QEMU start to the first test, piece by piece (s)",
                     ["piece", "main job boot (whole suite)", "bench boot (one module)"],
                     [[n, str((warm_p or {}).get(n, "-")), str((bench_p or {}).get(n, "-"))]
                      for n in names]))
    loop = r.get("edit_loop")
    if loop:
        out.append((f"Edit one function ({loop['edited']}) -> verdict, both modes, warm (s)",
                    ["tests run", "wall s", "of which the rebuild", "tests (both modes)"],
                    [[f"the {loop['picked']} covering it ({loop['why']})",
                      str(loop["affected_seconds"]), str(loop["affected_rebuild_seconds"]),
                      str(loop["affected_tests"])],
                     ["the whole suite", str(loop["whole_seconds"]),
                      str(loop["whole_rebuild_seconds"]), str(loop["whole_tests"])]]))
    out.append(("Targets (floor: the least the figure can be on this machine, whatever "
                "gmemtest does)", ["target", "limit", "measured", "floor", "met"], targets(r)))
    return out


def floors(r: Document) -> dict[str, float]:
    """The least each figure can come to on this machine whatever gmemtest does, by TARGETS
    key, where the run measured what it takes: a target whose floor is above its limit cannot
    be met here.

    - the equivalents: the gmemtest tests' own time, plus, per fresh process, a bare
      interpreter importing pytest;
    - 4K conversions: convert_loop.c's rate over a Python loop of the compiled call alone;
    - QEMU start to the first result: the boot's pieces up to pytest's start (QEMU, the
      kernel, the init), plus a bare interpreter importing pytest."""
    out: dict[str, float] = {}
    pytest_start = r.get("fixed_costs", {}).get("import_pytest_seconds")
    comp = r.get("comparison", [])
    if comp and pytest_start is not None and all("gmemtest_tests_seconds" in c for c in comp):
        out["equivalents_ratio"] = sum(c["gmemtest_tests_seconds"] + pytest_start
                                       for c in comp) / sum(c["selftest_seconds"]
                                                            for c in comp)
    conv = r.get("conversion")
    if conv and conv.get("python_bare"):
        out["conversion_ratio_4k"] = _rate(conv["c"])[4096] / _rate(conv["python_bare"])[4096]
    for key, pieces in (("boot_to_first_result", r.get("warm_boot_pieces")),
                        ("bench_first_result", r.get("bench_boot_pieces"))):
        if pieces and pytest_start is not None:
            out[key] = round(sum(pieces[p] for p in phases.PIECES[:3]) + pytest_start, 2)
    return out


def targets(r: Document) -> list[list[str]]:
    rows = []
    floor = floors(r)
    comp = r.get("comparison", [])
    if comp:
        ratio = sum(c["gmemtest_seconds"] for c in comp) / \
            sum(c["selftest_seconds"] for c in comp)
        row = TARGETS["equivalents_ratio"].row(ratio, floor.get("equivalents_ratio"))
        if any(c["gmemtest_status"] or c["selftest_status"] for c in comp):
            row[-1] = "no: a side exited non-zero"
        rows.append(row)
    conv = r.get("conversion")
    if conv:
        py, c = _rate(conv["python"]), _rate(conv["c"])
        rows.append(TARGETS["conversion_ratio_4k"].row(c[4096] / py[4096],
                                                       floor.get("conversion_ratio_4k")))
    if "objects_cold" in r:
        rows.append(TARGETS["objects"].row(r["objects_cold"]))
    walls = r.get("suites_wall_seconds")
    if walls:
        rows.append(TARGETS["parallel_ratio"].row(walls["warm"] / walls["serial"]))
        rows.append(TARGETS["first_boot_ratio"].row(walls["first"] / walls["warm"]))
    pieces = r.get("warm_boot_pieces")
    if pieces:
        rows.append(TARGETS["boot_to_first_result"].row(pieces["to first result"],
                                                         floor.get("boot_to_first_result")))
        rows.append(TARGETS["collection_share"].row(pieces["collection"]
                                                    / pieces["to first result"]))
    bench_pieces = r.get("bench_boot_pieces")
    if bench_pieces:
        rows.append(TARGETS["bench_first_result"].row(bench_pieces["to first result"],
                                                      floor.get("bench_first_result")))
    loop = r.get("edit_loop")
    if loop:
        rows.append(TARGETS["edit_loop"].row(loop["affected_seconds"]))
        rows.append(TARGETS["edit_loop_share"].row(loop["affected_seconds"]
                                                   / loop["whole_seconds"]))
    if "warm_rebuild_seconds" in r:
        rows.append(TARGETS["warm_rebuild"].row(r["warm_rebuild_seconds"]))
    return rows


def text(r: Document) -> str:
    """The terminal's report: each table under its title."""
    parts = []
    for title, header, rows in tables(r):
        parts += [title, *page.text_table(header, rows, indent="  ", rule=False), ""]
    return "\n".join(parts)


def markdown(r: Document) -> str:
    parts = ["# gmemtest bench", ""]
    for title, header, rows in tables(r):
        parts += [f"## {title}", "", *page.markdown_table(header, rows), ""]
    return "\n".join(parts)


