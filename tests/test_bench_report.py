"""`gmemtest bench`'s targets table: each figure against its limit, and the floor under it (the
least the figure can come to on the machine, whatever gmemtest does)."""

from __future__ import annotations

from gmemtest.results import bench, phases

PIECES = dict(zip(phases.PIECES, (0.1, 1.3, 0.1, 3.9, 0.3, 0.8, 0.5), strict=True))


def measured(**extra) -> bench.Document:
    return bench.Document(
        machine={"cpu": "test", "cores": 2, "memory_gib": 4}, kernel="k",
        fixed_costs={"import_pytest_seconds": 1.6},
        comparison=[bench.Comparison(selftest="a", selftest_seconds=10.0, gmemtest_seconds=6.0,
                                     selftest_status=0, gmemtest_status=0,
                                     gmemtest_tests_seconds=3.0),
                    bench.Comparison(selftest="b", selftest_seconds=2.0, gmemtest_seconds=3.0,
                                     selftest_status=0, gmemtest_status=0,
                                     gmemtest_tests_seconds=0.4)],
        conversion=bench.Conversion(
            via="vm", python=[bench.Rate(size=4096, round_trips=50, seconds=1.0)],
            c=[bench.Rate(size=4096, round_trips=100, seconds=1.0)],
            python_bare=[bench.Rate(size=4096, round_trips=80, seconds=1.0)]),
        warm_boot_pieces={**PIECES, "to first result": 7.0}, **extra)


def row(doc: bench.Document, label: str) -> list[str]:
    return next(r for r in bench.targets(doc) if r[0] == label)


def test_floors_add_pytest_start_to_what_gmemtest_cannot_shorten():
    floors = bench.floors(measured())
    # (3.0 + 1.6 + 0.4 + 1.6) s of gmemtest against 12 s of selftests
    assert round(floors["equivalents_ratio"], 3) == 0.55
    assert floors["conversion_ratio_4k"] == 1.25
    # QEMU, the kernel and the init (1.5 s), then a bare interpreter importing pytest
    assert floors["boot_to_first_result"] == 3.1


def test_the_targets_table_shows_each_floor_beside_the_measured_figure():
    doc = measured()
    assert row(doc, "QEMU start to first result (main job boot)") == \
        ["QEMU start to first result (main job boot)", "3 s", "7 s", "3.1 s", "no"]
    assert row(doc, "C / Python conversion round trips (4K)")[2:] == ["2.00x", "1.25x", "no"]
    assert row(doc, "gmemtest equivalents / selftests")[2:] == ["0.75x", "0.55x", "no"]


def test_a_run_that_did_not_measure_a_floor_shows_none():
    doc = measured()
    del doc["fixed_costs"]["import_pytest_seconds"]
    del doc["conversion"]["python_bare"]
    assert bench.floors(doc) == {}
    assert row(doc, "gmemtest equivalents / selftests")[3] == "-"


def test_a_side_that_exited_non_zero_is_not_met_whatever_its_time():
    doc = measured()
    doc["comparison"][1]["gmemtest_status"] = 1
    assert row(doc, "gmemtest equivalents / selftests")[-1] == "no: a side exited non-zero"
