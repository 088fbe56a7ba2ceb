"""The OpenSCENARIO conformance suite: every hand-written case under tests/data/openscenario/ plays
to its expected outcome (``<case>.yaml``), and every file there is standard (validates against the
shipped ASAM XSD / OpenDRIVE schema, road in OpenDRIVE) so another player (esmini) can load it."""

from __future__ import annotations

import math

import pytest

from adas.simulation.openscenario import (
    NotExecutableError,
    Recording,
    load_scenario,
    play,
    read_distribution,
)
from adas.simulation.scenario_schema import validate_file
from tests.simulation.openscenario_cases import CASES_DIR, Case, case_names, load_case


def test_the_suite_has_at_least_25_cases_each_with_its_scenario() -> None:
    names = case_names()
    assert len(names) >= 25
    for name in names:
        assert (CASES_DIR / f"{name}.xosc").is_file(), f"{name}.yaml has no {name}.xosc"
    orphans = {p.stem for p in CASES_DIR.glob("*.xosc")} - set(names)
    assert not orphans, f"cases without an expected outcome: {sorted(orphans)}"


@pytest.mark.parametrize("path", sorted(CASES_DIR.glob("*.xo*")), ids=lambda p: p.name)
def test_every_file_is_standard(path) -> None:  # type: ignore[no-untyped-def]
    validate_file(path)  # raises ScenarioValidationError naming line and schema message


def _key_matches(key: str, name: str) -> bool:
    tail = name.split("::")
    return key.split("::")[-len(tail) :] == tail


def _times(rec: Recording, element: str, transition: str) -> list[float]:
    keys = {x.element for x in rec.log if _key_matches(x.element, element)}
    assert len(keys) <= 1, f"{element!r} names several elements: {sorted(keys)}"
    return [round(x.time, 6) for x in rec.log if x.element in keys and x.transition == transition]


def _check_findings(case: Case, reasons: list[str]) -> None:
    for expected in case.findings:
        assert any(expected in r for r in reasons), f"no finding contains {expected!r}: {reasons}"


@pytest.mark.parametrize("name", case_names())
def test_conformance_case(name: str) -> None:
    case = load_case(name)
    path = CASES_DIR / f"{name}.xosc"
    if case.sweep is not None:
        _check_sweep(case, path)
        return
    scenario = load_scenario(path, case.parameters)
    reasons = [str(f) for f in scenario.findings]
    assert scenario.executable == case.executable, reasons
    _check_findings(case, reasons)
    if not case.executable:
        with pytest.raises(NotExecutableError) as exc:
            play(scenario, step_s=case.step_s, ego=case.ego)
        for expected in case.findings:
            assert expected in str(exc.value)
        return
    for pname, value in case.resolved.items():
        assert (
            scenario.parameters[pname] == pytest.approx(value)
            if isinstance(value, float)
            else (scenario.parameters[pname] == value)
        ), f"{pname} = {scenario.parameters[pname]!r}, expected {value!r}"
    if case.refused is not None:
        with pytest.raises(NotExecutableError, match=case.refused):
            play(scenario, step_s=case.step_s, ego=case.ego)
        return
    rec = play(scenario, step_s=case.step_s, ego=case.ego, horizon_s=case.horizon_s)
    _check_recording(case, rec)


def _check_recording(case: Case, rec: Recording) -> None:
    if case.end is not None:
        assert rec.finished and rec.end_time == pytest.approx(case.end), (rec.finished, rec.end_time)
    for a in case.at:
        got = rec.value(a.entity, a.field, a.t)
        assert got == pytest.approx(a.value, abs=a.tol), (
            f"{a.entity}.{a.field} at t={a.t}: {got}, expected {a.value}"
        )
    for f in case.first_within:
        series = rec.values[f.entity][f.field]
        hits = [float(t) for t, v in zip(rec.times, series, strict=True) if abs(v - f.value) <= f.tol]
        assert hits, f"{f.entity}.{f.field} never within {f.tol} of {f.value}"
        assert hits[0] == pytest.approx(f.t), (
            f"{f.entity}.{f.field} first within {f.tol} of {f.value} at {hits[0]}"
        )
    for tr in case.transitions:
        got = _times(rec, tr.element, tr.transition)
        assert got == pytest.approx(tr.times), f"{tr.element} {tr.transition} at {got}, expected {tr.times}"
    for nv in case.never:
        assert not _times(rec, nv.element, nv.transition), f"{nv.element} {nv.transition} happened"
    if case.order:
        firsts = []
        for item in case.order:
            element, transition = item.rsplit(":", 1)
            idx = [
                k
                for k, x in enumerate(rec.log)
                if _key_matches(x.element, element) and x.transition == transition
            ]
            assert idx, f"{item} never happened"
            firsts.append(idx[0])
        assert firsts == sorted(firsts), f"out of order: {case.order}"
    for c in case.conditions:
        got = rec.conditions[rec.index(c.t)]
        assert got is not None and (got.weather, got.lighting, got.severity) == (
            c.weather,
            c.lighting,
            c.severity,
        ), got
    for it in case.intents:
        intent = rec.intents[rec.index(it.t)]
        for attr in ("speed", "target_speed", "lane_id", "lateral"):
            want = getattr(it, attr)
            if want is not None:
                assert getattr(intent, attr) == pytest.approx(want, abs=it.tol), (
                    f"intent.{attr} at {it.t}: {intent}"
                )
    for track in case.tracks:
        worst = max(
            math.hypot(rec.value(track.entity, "x", t) - x, rec.value(track.entity, "y", t) - y)
            for t, x, y in track.points
        )
        assert worst <= track.tol, f"{track.entity} is {worst:.3f} m off its recorded track"


def _check_sweep(case: Case, path) -> None:  # type: ignore[no-untyped-def]
    expect = case.sweep
    assert expect is not None
    sweep = read_distribution(path)
    assert len(sweep.points) == expect.count
    if expect.first is not None:
        assert sweep.points[0] == expect.first
    if expect.last is not None:
        assert sweep.points[-1] == expect.last
    if expect.seed is not None:
        assert sweep.seed == expect.seed
        assert read_distribution(path).points == sweep.points  # the same seed draws the same sweep
    for pname, (lo, hi) in expect.ranges.items():
        assert all(lo <= float(p[pname]) <= hi for p in sweep.points), [p[pname] for p in sweep.points]
    for pname, allowed in expect.choices.items():
        assert {p[pname] for p in sweep.points} <= set(allowed)
    if expect.play_each_s is not None:
        for point in sweep.points:
            scenario = load_scenario(sweep.scenario_file, point)
            assert scenario.executable, scenario.reason
            play(scenario, step_s=case.step_s, ego=case.ego, horizon_s=expect.play_each_s)
