"""``benchmarks/adv_table5.py report --earlier``: joining an earlier report's runs to the runs
under ``--out`` (a grid whose first seeds' folders were lost) keeps one grid per setting, takes
redone runs from ``--out`` and says whether they reproduce the earlier values."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table5() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_adv_table5", ROOT / "benchmarks" / "adv_table5.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


SETTINGS: dict[str, Any] = {"config": "mnist_adv_wide", "channels": [16, 32], "data": "embedded+mnist", "eps": 1.0,
                            "eval_size": 200, "clean_steps": 1000, "adv_steps": 80, "lr_schedule": "cosine",
                            "shift": 2, "pgd_steps": 5, "jiio_train_iterations": 40}


def run(method: str, seed: int, clean: float) -> dict[str, Any]:
    return {"run": f"{method}-s{seed}", "method": method, "seed": seed, "clean": clean, "pgd": 90.0, "jiio": 89.5,
            "clean_mnist_test": 98.09, "steps": 80, **{k: SETTINGS[k] for k in ("config", "channels", "data")}}


def earlier(*runs: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"benchmark": "adv-table5", **SETTINGS, **changes, "runs": list(runs)}


def test_earlier_runs_join_and_reruns_are_compared(table5: ModuleType) -> None:
    fresh = [run("jiio", 0, 97.5), run("jiio", 2, 96.0)]
    old = earlier(run("jiio", 0, 97.5), run("jiio", 1, 97.0))
    merged, reruns = table5.merge_earlier(fresh, SETTINGS, old, "old.json")
    assert [r["run"] for r in merged] == ["jiio-s0", "jiio-s1", "jiio-s2"]
    by_run = {r["run"]: r for r in merged}
    assert by_run["jiio-s1"]["from"] == "old.json" and by_run["jiio-s1"]["clean"] == 97.0
    assert "from" not in by_run["jiio-s0"] and "from" not in by_run["jiio-s2"]
    assert [(r["run"], r["identical"]) for r in reruns] == [("jiio-s0", True)]
    assert reruns[0]["columns"]["clean"] == {"earlier": 97.5, "now": 97.5}


def test_a_rerun_that_differs_is_flagged_and_the_new_value_kept(table5: ModuleType) -> None:
    merged, reruns = table5.merge_earlier([run("jiio", 0, 98.0)], SETTINGS, earlier(run("jiio", 0, 97.5)), "old.json")
    assert [r["clean"] for r in merged] == [98.0]
    assert reruns[0]["identical"] is False
    assert reruns[0]["columns"]["clean"] == {"earlier": 97.5, "now": 98.0}


@pytest.mark.parametrize(("key", "value"), [("channels", [8, 16]), ("data", "embedded"), ("adv_steps", 40),
                                        ("lr_schedule", "constant"), ("eval_size", 100)])
def test_an_earlier_report_of_other_settings_is_refused(table5: ModuleType, key: str, value: Any) -> None:
    with pytest.raises(SystemExit, match=re.escape(f"its {key} is {value!r}")):
        table5.merge_earlier([run("jiio", 0, 97.5)], SETTINGS, earlier(run("jiio", 1, 97.0), **{key: value}), "old.json")


def test_an_earlier_file_of_another_benchmark_is_refused(table5: ModuleType) -> None:
    with pytest.raises(SystemExit, match="not a Table 5 report"):
        table5.merge_earlier([], SETTINGS, {"benchmark": "adv-table5-v0", "runs": []}, "x.json")
