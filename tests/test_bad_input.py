"""Bad input, through both ``search check`` and ``search run``: one line naming what is wrong, exit code 2, no
traceback, nothing written to the store, and Ray never started (``check`` refuses everything ``run`` would).

The commands run in this process (``search.__main__.main``), so a traceback would fail the test as an exception,
and each case costs milliseconds; ``run`` is only tried on what ``check`` refused, so no case can start a search.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.__main__ import main
from search.space import SpaceError, load

ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "spaces" / "demo.yaml").read_text())


def demo(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(DEMO)
    raw.update(changes)
    return raw


def base(**changes: Any) -> dict[str, Any]:
    return demo(base={**DEMO["base"], **changes})


# (case, the space file as a mapping or raw bytes, extra arguments, what the one line must contain)
CASES: list[tuple[str, Any, list[str], str]] = [
    ("seeds empty", demo(seeds=[]), [], "seeds: give at least one seed"),
    ("seeds count 0", demo(seeds=0), [], "seeds: a count must be >= 1"),
    ("seeds negative", demo(seeds=[0, -3]), [], "seeds must be >= 0"),
    ("seeds repeated", demo(seeds=[1, 1]), [], "repeated seeds"),
    ("--seeds=-1", demo(), ["--seeds=-1"], "seeds must be >= 0"),
    ("--seeds not numbers", demo(), ["--seeds", "a,b"], "seeds are integers"),
    ("--seeds empty", demo(), ["--seeds", ""], "seeds are integers"),
    ("not UTF-8", b"name: caf\xe9\n", [], "not UTF-8"),
    ("empty file", b"", [], "the top level must be a mapping"),
    ("a list", b"- name: x\n", [], "the top level must be a mapping"),
    ("not YAML", b"name: [unclosed\n", [], "not valid YAML"),
    ("no name", {k: v for k, v in DEMO.items() if k != "name"}, [], "name: Field required"),
    ("name with a slash", demo(name="a/b"), [], "name: String should match pattern"),
    ("name unicode", demo(name="démo"), [], "name: String should match pattern"),
    ("--name too long", demo(), ["--name", "x" * 250], "at most 200"),
    ("--name with a slash", demo(), ["--name", "a/b"], "search name 'a/b'"),
    ("--name hidden", demo(), ["--name", ".x"], "not starting with '.'"),
    ("--set boolean for a number", demo(), ["--set", "epochs=true"], "base.epochs: a boolean where a number is expected"),
    ("--set no value", demo(), ["--set", "steps_per_epoch="], "--set steps_per_epoch=: no value"),
    ("--set negative epochs", demo(), ["--set", "epochs=-1"], "base.epochs: Input should be greater than or equal to 1"),
    ("--set unknown key", demo(), ["--set", "nosuchkey=1"], "base.nosuchkey: unknown key"),
    ("--set no key", demo(), ["--set", "=3"], "--set takes key=value"),
    ("--set no '='", demo(), ["--set", "epochs"], "--set takes key=value"),
    ("--set text for a number", demo(), ["--set", "mu=fast"], "base.mu: Input should be a valid integer"),
    ("--set a varied key", demo(), ["--set", "beta=1"], "space.beta: varied by the space"),
    ("boolean in the file", base(mu=True), [], "base.mu: a boolean where a number is expected"),
    ("loguniform to infinity", demo(space={**DEMO["space"], "lr": {"loguniform": [0.01, float("inf")]}}), [], "bounds must be finite"),
    ("uniform with NaN", demo(space={**DEMO["space"], "threshold": {"uniform": [0.5, float("nan")]}}), [], "bounds must be finite"),
    ("uniform reversed", demo(space={**DEMO["space"], "threshold": {"uniform": [0.9, 0.5]}}), [], "low must be below high"),
    ("loguniform from 0", demo(space={**DEMO["space"], "lr": {"loguniform": [0.0, 0.1]}}), [], "bounds must be positive"),
    ("int reversed", demo(space={"mu": {"int": [5, 1]}}), [], "low must be below high"),
    ("choice empty", demo(space={**DEMO["space"], "beta": {"choice": []}}), [], "List should have at least 1 item"),
    ("two kinds", demo(space={**DEMO["space"], "beta": {"choice": [0.0], "grid": [1.0]}}), [], "give exactly one of"),
    ("a choice out of range", demo(space={**DEMO["space"], "threshold": {"choice": [0.5, 1.5]}}), [], "space.threshold.choice[1]"),
    ("an unknown parameter", demo(space={"gammma": {"choice": [1.0]}}), [], "space.gammma: unknown parameter"),
    ("seed as a parameter", demo(space={"seed": {"choice": [1, 2]}}), [], "seeds are set by the top-level 'seeds'"),
    ("grace above epochs", demo(scheduler={"type": "asha", "grace_period": 20}), [], "scheduler.grace_period: must be <= the last epoch"),
    ("max_t above epochs", demo(scheduler={"type": "asha", "max_t": 20}), [], "scheduler.max_t: must be <= epochs"),
    ("reduction factor 1", demo(scheduler={"type": "asha", "reduction_factor": 1}), [], "scheduler.reduction_factor"),
    ("unknown scheduler", demo(scheduler={"type": "hyperband"}), [], "scheduler.type: Input should be"),
    ("halving apart", demo(scheduler={"type": "halving", "seeds": "apart"}), [], "halving compares configurations"),
    ("seeds together without a scheduler", demo(scheduler={"type": "none", "seeds": "together"}), [], "only for type 'asha' or 'halving'"),
    ("unknown search", demo(search={"type": "random"}), [], "search.type: Input should be"),
    ("negative startup", demo(search={"type": "optuna", "startup_trials": -1}), [], "search.startup_trials"),
    ("num_samples 0", demo(num_samples=0), [], "num_samples: Input should be greater than or equal to 1"),
    ("num_samples boolean", demo(num_samples=True), [], "num_samples: a boolean where a number is expected"),
    ("max_concurrent 0", demo(max_concurrent=0), [], "max_concurrent"),
    ("no workers", demo(resources={"workers": 0}), [], "resources.workers"),
    ("--workers 0", demo(), ["--workers", "0"], "resources.workers"),
    ("negative GPUs", demo(resources={"gpus_per_worker": -1}), [], "resources.gpus_per_worker"),
    ("--cpus-per-worker text", demo(), ["--cpus-per-worker", "many"], "argument --cpus-per-worker"),
    ("a dataset folder missing", base(dataset="ucf101", data_root="/nonexistent/ucf101"), [], "base.data_root: dataset folder /nonexistent/ucf101 does not exist"),
    ("a dataset folder empty", base(dataset="ucf101", data_root=""), [], "base.data_root"),
    ("unknown metric", demo(metric="accuracy"), [], "metric: 'accuracy' is not a reported metric"),
    ("unknown mode", demo(mode="up"), [], "mode: Input should be 'max' or 'min'"),
    ("unknown top-level key", demo(sheduler={"type": "asha"}), [], "sheduler: unknown key"),
    ("unknown base key", base(learning_rate=0.1), [], "base.learning_rate: unknown key"),
    ("threshold above 1", base(threshold=2), [], "base.threshold"),
    ("cells with optuna", demo(cells=[{"beta": 0.0}]), [], "cells: need search type 'grid'"),
    ("a store URI pyarrow cannot open", demo(), ["--store", "nosuch://bucket/x"], "--store nosuch://bucket/x"),
    ("an empty store", demo(), ["--store", ""], "--store: empty"),
]


def space_file(folder: Path, content: Any) -> Path:
    path = folder / "space.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(yaml.safe_dump(content, sort_keys=False, allow_unicode=True))
    return path


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case", "content", "extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(
    case: str, content: Any, extra: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = space_file(tmp_path, content)
    store = tmp_path / "store"
    argv = [str(path), *([] if "--store" in extra else ["--store", str(store)]), *extra]
    for command in ("check", "run"):
        try:
            code = main([command, *argv])
        except SystemExit as exit_:  # argparse's refusal
            code = exit_.code
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        assert code == 2, (command, out.out[-500:], out.err[-500:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (command, lines)
        assert expected in lines[0], (command, lines[0])
        assert "Traceback" not in out.err
        assert not store.exists(), f"{command} wrote {list(store.rglob('*'))}"


VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.floats(-1, 2), max_size=3), st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)  # fmt: skip
KEYS = ["name", "seeds", "num_samples", "max_concurrent", "metric", "mode", "space", "scheduler", "search", "resources", "base"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), inner=st.one_of(st.none(), st.text(max_size=12)), value=VALUES)
def test_any_mutation_of_a_valid_space_is_accepted_or_refused_with_the_projects_error(
    tmp_path: Path, key: str, inner: str | None, value: Any
) -> None:
    """Replace a top-level key, or a key under it, by anything YAML can say: load accepts or raises SpaceError."""
    raw = copy.deepcopy(DEMO)
    if inner is not None and isinstance(raw.get(key), dict):
        raw[key] = {**raw[key], inner: value}
    else:
        raw[key] = value
    path = tmp_path / "mutated.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    try:
        load(path)
    except SpaceError as exc:
        assert str(exc).startswith(str(path)), str(exc)
