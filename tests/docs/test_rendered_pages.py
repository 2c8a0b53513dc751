"""Every docs page and the README equal what ``benchmarks/report.py`` renders from its template
(``benchmarks/pages/``) and the committed results (``benchmarks/results/``), and every figure a
page embeds exists and has a named producer; a placeholder naming a missing key or file fails
with an error naming the key and the template."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmarks_report", ROOT / "benchmarks" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_pages_equal_their_rendering(report: ModuleType) -> None:
    problems = report.check()
    assert not problems, (
        "pages differ from their templates' rendering (edit benchmarks/pages/PAGE.md, then run "
        "`python benchmarks/report.py`):\n" + "\n".join(problems))


def test_every_page_has_a_template_and_every_template_a_page(report: ModuleType) -> None:
    templates = sorted(report.PAGES.glob("*.md"))
    pages = {report.page_of(t) for t in templates}
    assert ROOT / "README.md" in pages
    assert set((ROOT / "docs").glob("*.md")) <= pages


def _one_template(tmp_path: Path, text: str) -> Path:
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "broken.md").write_text(text, encoding="utf8")
    return pages


def test_a_placeholder_naming_a_missing_key_fails_with_the_key_and_the_template(
        report: ModuleType, tmp_path: Path) -> None:
    pages = _one_template(tmp_path, "# A page\n\nratio {{ inversion-cpu:ratio_mediann | .1f }}×\n")
    with pytest.raises(report.TemplateError) as err:
        report.render_all(pages=pages)
    message = str(err.value)
    assert "broken.md:3" in message and "ratio_mediann" in message and "ratio_median" in message, message


def test_a_placeholder_naming_a_missing_file_fails_with_the_file_and_the_template(
        report: ModuleType, tmp_path: Path) -> None:
    pages = _one_template(tmp_path, "x {{ recorded/no-such-run:psnr | .2f }}\n")
    with pytest.raises(report.TemplateError) as err:
        report.render_all(pages=pages)
    message = str(err.value)
    assert "broken.md:1" in message and "benchmarks/results/recorded/no-such-run.json" in message, message


def test_a_placeholder_without_a_source_or_with_a_bad_format_fails(report: ModuleType, tmp_path: Path) -> None:
    for text, expected in (("{{ ratio_median }}", "names no source"),
                           ("{{ inversion-cpu:command | .2f }}", "format '.2f' applied to the text"),
                           ("{{ inversion-cpu:adam_lr_sweep }}", "not a number or text")):
        with pytest.raises(report.TemplateError, match=expected):
            report.substitute(text, "t.md", report.Sources())


def test_the_syntax(report: ModuleType, tmp_path: Path) -> None:
    """Keys with dots, list items picked by a field, arithmetic between keys, filters and the
    escape, on results written here (not the committed ones, which change with every run)."""
    (tmp_path / "inv-cpu.json").write_text(json.dumps({
        "adam_lr_sweep": {"0.4": 0.0123456, "0.2": 0.5}, "times": [1.25, 1.531, 1.3],
        "jiio": {"A-II": {"ratio": 12.25}, "A-I": {"ratio": 3.2}},
    }), encoding="utf8")
    (tmp_path / "att-cpu.json").write_text(json.dumps({"sweep": [{"steps": 1, "s": 0.1}, {"steps": 3, "s": 0.681}]}),
                                           encoding="utf8")
    sources = report.Sources(tmp_path, "cpu")
    render = report.substitute
    assert render("{{ inv-cpu:adam_lr_sweep.0.4 | .4f }}", "t", sources) == "0.0123"  # a key with a dot
    assert render("{{ att-cpu:sweep.steps=3.s | *100 | .0f }}%", "t", sources) == "68%"
    assert render("{{ inv-cpu:jiio.A-II.ratio - inv-cpu:jiio.A-I.ratio | .1f }}", "t", sources) == "9.1"
    assert render("{{ inv-cpu:times | max | .2f }} s", "t", sources) == "1.53 s"
    assert render("written as \\{{ a:b }}", "t", sources) == "written as {{ a:b }}"


def test_check_names_the_page_and_its_first_differing_line(report: ModuleType, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    template = sorted(report.PAGES.glob("*.md"))[0]
    banner = report.banner
    monkeypatch.setattr(report, "banner", lambda t: banner(report.PAGES / t.name))  # the committed template's
    pages = tmp_path / "pages"
    pages.mkdir()
    lines = template.read_text(encoding="utf8").splitlines(keepends=True)
    lines[2] = "a line that the committed page does not have\n"
    (pages / template.name).write_text("".join(lines), encoding="utf8")
    problems = report.check(pages=pages)
    page = report.page_of(template).relative_to(ROOT).as_posix()
    differs = [p for p in problems if p.startswith(f"{page} differs")]
    # the banner line comes first, so template line 3 is page line 5
    assert differs and "line 5: rendered 'a line that the committed page does not have'" in differs[0], problems


def test_figures_need_a_file_and_a_producer(report: ModuleType, tmp_path: Path) -> None:
    page = ROOT / "docs" / "some-page.md"
    problems = report.check_figures({page: "![a figure](img/not-drawn-by-anyone.png)\n"
                                            "![listed](img/jiio-vs-adam-cpu.png)\n"})
    assert problems == [
        "docs/some-page.md: image img/not-drawn-by-anyone.png does not exist",
        "docs/some-page.md: image img/not-drawn-by-anyone.png has no producer in benchmarks/report.py FIGURES",
    ]
    for rel, command in report.FIGURES.items():
        assert (ROOT / "docs" / rel).is_file() and command.strip(), rel
    assert {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs" / "img").glob("*.png")} <= set(report.FIGURES)


def test_main_check_exits_non_zero_naming_the_page(report: ModuleType, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    data = json.loads((results / "inversion-cpu.json").read_text(encoding="utf8"))
    data["ratio_median"] = 99.0
    (results / "inversion-cpu.json").write_text(json.dumps(data), encoding="utf8")
    assert report.main(["--check", "--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert "docs/index.md differs" in err and "99.0×" in err, err


def test_redrawn_figures_are_listed_and_their_plotters_exist(report: ModuleType) -> None:
    """``report.py --figures`` redraws these from committed results: each is a listed figure
    (with its producer) and its plotting script exists and takes ``--results``/``--out``."""
    for image, script in report.REDRAW.items():
        assert image in report.FIGURES, image
        source = (report.HERE / script).read_text(encoding="utf8")
        assert '"--results"' in source and '"--out"' in source, script


def test_table4_derived_table_choices_and_paired_comparison(report: ModuleType, tmp_path: Path) -> None:
    """``derived:table4`` on a results file written here: cells as median (interval), the chosen
    learning rates and budgets, and the paired supervised − unsupervised comparison, checked on
    faces whose differences are known (a constant +1 dB gives the interval [1, 1]; differences
    of both signs around zero resolve nothing)."""
    proto = {"held_out_faces": 4, "val_faces": 2, "resamples": 200, "seed": 0}

    def cell(psnr: list[float], **extra: float) -> dict[str, object]:
        return {"median": sorted(psnr)[(len(psnr) - 1) // 2], "ci95_low": min(psnr), "ci95_high": max(psnr),
                "psnr": psnr, **extra}

    rows = {
        "jiio-sup-100": {"group": "supervised", "label": "JIIO-MDEQ-100",
                         "cells": {"denoise0.2": cell([21.0, 22.0, 23.0, 24.0], chosen_lr=3e-4),
                                   "blur": cell([19.5, 20.5, 20.0, 21.0], chosen_lr=1e-3)},
                         "trained": {"denoise0.2 lr0.0003": {"steps": 12, "cpu_seconds": 600.0},
                                     "denoise0.2 lr0.001": {"steps": 1300, "cpu_seconds": 603.0}}},
        "jiio-100": {"group": "unsupervised", "label": "JIIO-MDEQ-100",
                     "cells": {"denoise0.2": cell([20.0, 21.0, 22.0, 23.0]), "blur": cell([20.0, 20.0, 20.5, 20.5])},
                     "trained": {"decoder": {"steps": 40, "cpu_seconds": 1500.0}}},
        "observed": {"group": "", "label": "observed",
                     "cells": {"denoise0.2": cell([14.0, 14.0, 14.0, 14.0]), "blur": cell([30.0, 30.0, 30.0, 30.0])}},
    }
    (tmp_path / "table4-cpu.json").write_text(json.dumps({"protocol": proto, "rows": rows}), encoding="utf8")
    t4 = report.Sources(tmp_path, "cpu").load("derived")["table4"]
    assert t4["table"].splitlines() == [
        "| | model | denoise0.2 | blur |", "|---|---|---:|---:|",
        "| supervised | JIIO-MDEQ-100 | 22.00 (21.00–24.00) | 20.00 (19.50–21.00) |",
        "| unsupervised | JIIO-MDEQ-100 | 21.00 (20.00–23.00) | 20.00 (20.00–20.50) |",
        "|  | observed | 14.00 (14.00–14.00) | 30.00 (30.00–30.00) |",
    ]
    assert "| JIIO-MDEQ-100 | learning rate denoise0.2 0.0003, blur 0.001 | 2 models, 12–1,300 steps, 10.0–10.1 CPU min each |" in t4["choices"]
    assert "| JIIO-MDEQ-100 | — | 1 model, 40 steps, 25.0 CPU min each |" in t4["choices"]
    assert t4["paired"]["denoise0.2"] == {"median": 1.0, "ci95_low": 1.0, "ci95_high": 1.0}
    assert "denoise0.2 +1.00 dB (+1.00 to +1.00: supervised ahead)" in t4["paired_text"]
    low, high = t4["paired"]["blur"]["ci95_low"], t4["paired"]["blur"]["ci95_high"]  # diffs -0.5, 0.5, -0.5, 0.5
    assert low == -0.5 and high == 0.5 and "blur -0.50 dB (-0.50 to +0.50: no difference resolved)" in t4["paired_text"]
    # the observation is no model: the best cell is a model's
    # ties are named
    assert t4["best_text"] == ("denoise0.2: JIIO-MDEQ-100 (supervised), 22.00 dB; "
                               "blur: JIIO-MDEQ-100 (supervised) and JIIO-MDEQ-100 (unsupervised), 20.00 dB")


@pytest.mark.parametrize(("median", "verdict"), [(0.25, "met"), (0.2501, "**missed**"), (0.12, "met")])
def test_overhead_verdict_follows_the_measured_median(report: ModuleType, tmp_path: Path, median: float,
                                                      verdict: str) -> None:
    """``derived:overhead.verdict`` says met exactly when the measured median is ≤ 25 %."""
    (tmp_path / "overhead-cpu.json").write_text(json.dumps({"overhead_median": median}), encoding="utf8")
    (tmp_path / "overhead-malloc-defaults-cpu.json").write_text(json.dumps({"overhead_median": median}),
                                                                encoding="utf8")
    derived = report.Sources(tmp_path, "cpu").load("derived")["overhead"]
    assert derived["verdict"] == derived["defaults_verdict"] == verdict


def _grid(n: int, jiio_clean: float, jiio_test: float | None, jiio_pgd: float, pgd_pgd: float) -> dict[str, object]:
    """A Table 5 grid of ``n`` seeds whose means are the given values (every seed alike)."""
    def cell(v: float) -> dict[str, float]:
        return {"mean": v, "std": 0.0, "min": v, "max": v, "n": n}

    table: dict[str, dict[str, dict[str, float]]] = {}
    runs = []
    for method, clean, test, pgd in (("jiio", jiio_clean, jiio_test, jiio_pgd), ("pgd", 97.0, 97.5, pgd_pgd)):
        table[method] = {"clean": cell(clean), "pgd": cell(pgd), "jiio": cell(pgd - 1),
                         "steps": cell(80), "train_cpu_seconds": cell(800.0)}
        if test is not None:
            table[method]["clean_mnist_test"] = cell(test)
        for seed in range(n):
            run = {"run": f"{method}-s{seed}", "clean": clean, "pgd": pgd}
            if test is not None:
                run["clean_mnist_test"] = test
            runs.append(run)
    return {"table": table, "runs": runs}


@pytest.mark.parametrize(
    ("n", "clean", "test", "jiio_pgd", "pgd_pgd", "all_met"),
    [
        (3, 96.0, 97.0, 80.0, 82.0, True),  # clean judged on the test set; gap exactly 2
        (3, 98.0, 96.99, 80.0, 82.0, False),  # test-set clean below the bar
        (3, 98.0, None, 80.0, 82.0, False),  # no test-set column: not judged met
        (2, 96.0, 97.5, 80.0, 82.0, False),  # too few seeds
        (3, 96.0, 97.5, 79.9, 82.0, False),  # more than 2 points below PGD training
        (3, 96.0, 97.5, 74.5, 74.0, False),  # under 75 % robust
    ],
)
def test_adv_table5_verdicts_follow_the_bars(report: ModuleType, tmp_path: Path, n: int, clean: float,
                                             test: float | None, jiio_pgd: float, pgd_pgd: float,
                                             all_met: bool) -> None:
    """``derived:adv_table5_v5.all_met`` (protocol 5's rule: the clean bar on MNIST's test set)
    holds exactly when every bar does; the verdict text names each bar's outcome."""
    grid = _grid(n, clean, test, jiio_pgd, pgd_pgd)
    (tmp_path / "adv-table5-v5-cpu.json").write_text(json.dumps(grid), encoding="utf8")
    derived = report.Sources(tmp_path, "cpu").load("derived")["adv_table5_v5"]
    assert derived["all_met"] is all_met
    assert derived["jiio_clean"] == clean and derived["jiio_pgd"] == jiio_pgd and derived["pgd_pgd"] == pgd_pgd
    verdict = derived["verdict"]
    assert f"on {n} seeds (bar: 3: {'met' if n >= 3 else '**missed**'})" in verdict
    assert f"{jiio_pgd - pgd_pgd:+.1f} points" in verdict
    if test is None:
        assert "MNIST's test set" not in verdict
    else:
        assert f"{test:.2f} % (bar: ≥ 97 %: {'met' if test >= 97 else '**missed**'})" in verdict


def test_adv_table5_reruns_say_which_reproduced(report: ModuleType, tmp_path: Path) -> None:
    """``derived:adv_table5_v5.reruns``: a redone run that reproduced every earlier value is named
    as such, one that did not lists only the values that changed, and a grid without reruns
    says so."""
    grid = _grid(3, 97.5, 98.0, 90.0, 89.0)
    def same(clean: float, pgd: float) -> dict[str, dict[str, float]]:
        return {"clean": {"earlier": clean, "now": clean}, "pgd": {"earlier": pgd, "now": pgd}}

    grid["reruns"] = [
        {"run": "clean-s0", "identical": True, "columns": same(98.0, 80.0)},
        {"run": "jiio-s0", "identical": True, "columns": same(97.5, 90.0)},
        {"run": "pgd-s0", "identical": False,
         "columns": {"clean": {"earlier": 97.0, "now": 97.0}, "pgd": {"earlier": 90.0, "now": 89.0}}},
    ]
    (tmp_path / "adv-table5-v5-cpu.json").write_text(json.dumps(grid), encoding="utf8")
    text = report.Sources(tmp_path, "cpu").load("derived")["adv_table5_v5"]["reruns"]
    assert text == ("`clean-s0` and `jiio-s0` reproduced their earlier values exactly (clean, PGD-20); "
                    "`pgd-s0` did not (PGD-20 90 → 89).")
    # the bars with pgd-s0's earlier PGD-20 in place of its new one: PGD training's mean 89 → 89 + 1/3
    alt = report.Sources(tmp_path, "cpu").load("derived")["adv_table5_v5"]["with_earlier"]
    assert alt["gap"] == pytest.approx(90.0 - (90.0 + 89.0 + 89.0) / 3) and alt["jiio_clean_mnist_test"] == 98.0
    (tmp_path / "adv-table5-v5-cpu.json").write_text(json.dumps(_grid(3, 97.5, 98.0, 90.0, 89.0)), encoding="utf8")
    assert report.Sources(tmp_path, "cpu").load("derived")["adv_table5_v5"]["reruns"] == "no run was redone."
