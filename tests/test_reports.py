"""Reports a reader understands in 30 seconds (issue #17): findings computed from the numbers, intervals,
provenance, the page's structure, plain logs when stdout is a file, and files others can read."""

from __future__ import annotations

import copy
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from advsal import progress
from advsal.report.detection import render_detection_report
from advsal.report.document import Report, stage_type, timings_summary
from advsal.report.findings import compare, detection_findings
from advsal.studies import stats

PROVENANCE = {"advsal": "0.1.0", "git_commit": "0123456789abcdef", "torch": "2.9.9", "python": "3.11.7",
              "platform": "Linux-test", "device": "cuda:0", "torch_threads": 7, "date": "2026-12-01T00:00:00",
              "config_hash": "feedfacecafe1234", "seed": 42, "detector_seeds": [0, 1, 2], "wall_seconds": 12.5}


def iv(est, lo, hi):
    return {"estimate": est, "lo": lo, "hi": hi, "n": 100}


def row(auroc, lo, hi, d_clean=0.95, d_adv=0.9):
    return {"f_clean": 0.99, "f_adv": 0.1, "d_clean": d_clean, "d_adv": d_adv, "auroc": auroc, "tpr_at_fpr": 0.8,
            "n_clean": 100, "n_adv": 100, "ci": {"auroc": iv(auroc, lo, hi), "d_clean": iv(d_clean, 0.9, 0.99),
                                                 "d_adv": iv(d_adv, 0.85, 0.95)},
            "restricted": {"d_adv": d_adv, "auroc": auroc, "n_adv": 90}}


def planted_results() -> dict:
    """A detection results dict with planted numbers: enough for the renderer and the findings."""
    return {
        "config": {"data": {"name": "mnist5k"}, "max_accuracy": 0.3, "fpr": 0.05, "n_train": 100, "n_test": 100,
                   "saliency_score": "logit", "saliency_target": "predicted",
                   "detector": {"architecture": "mnist-net", "lr": 1e-3, "epochs": 1}},
        "data": {"train": "train: 400 images", "test": "test: 100 images"},
        "classifier": {"architecture": "mnist-net", "epochs_run": 2, "train_accuracy": 0.99,
                       "test": {"accuracy": 0.98}},
        "names": {"attacks": {"bim": "Iterative L∞", "bim-l2": "Iterative L2", "cw": "C&W"},
                  "detectors": {"image+saliency": "image ⊕ saliency", "image": "image only"}},
        "epsilons": {"bim": {"eps": 0.1, "accuracy": 0.2}, "bim-l2": {"eps": 1.5, "accuracy": 0.25}},
        "attacks": {a: {"params": {}, "test": {"success_rate_on_correct": 0.9, "accuracy_under_attack": 0.1,
                                               "mean_linf": 0.1, "mean_l2": 1.0, "mean_l0": 300.0},
                        "train": {"images_per_second": 100.0}} for a in ("bim", "bim-l2", "cw")},
        "table2": {"bim": row(1.0, 0.99, 1.0), "bim-l2": row(0.97, 0.95, 0.99), "cw": row(0.93, 0.9, 0.96)},
        "baselines": {"image": {"bim": row(1.0, 0.995, 1.0), "cw": row(0.7, 0.6, 0.8)}},
        "roc": {"bim": {"fpr": [0, 0.001, 0.01, 1], "tpr": [0, 0.9, 1, 1], "auroc": 1.0},
                "cw": {"fpr": [0, 0.05, 0.5, 1], "tpr": [0, 0.3, 0.9, 1], "auroc": 0.93}},
        "cross_attack": {"attacks": ["bim", "bim-l2", "cw"],
                         "matrix": [[0.99, 0.9, 0.52], [0.95, 0.98, 0.55], [0.8, 0.85, 0.95]]},
        "generalisation_eps": {"bim": {"eps_factors": [0.5, 1.0], "eps": [0.05, 0.1],
                                       "matrix": [[0.9, 0.95], [0.7, 0.97]]}},
        "second_round": {"eps": 0.1, "attack_detector": "bim",
                         "rows": [{"attack": "adaptive", "f_fooled": 0.9, "d_says_clean": 0.85, "both": 0.8,
                                   "mean_linf": 0.1, "mean_l2": 1.0, "n": 100,
                                   "ci": {"both": iv(0.8, 0.72, 0.87)}},
                                  {"attack": "first round", "f_fooled": 1.0, "d_says_clean": 0.0, "both": 0.0,
                                   "mean_linf": 0.1, "mean_l2": 1.0, "n": 100}]},
        "timings": [{"stage": "classifier", "seconds": 3.0, "cached": False},
                    *({"stage": f"adv-{a}-{s}", "seconds": 1.0, "cached": s == "test"}
                      for a in ("bim", "cw") for s in ("train", "test")),
                    {"stage": "min-eps-s0-balanced", "seconds": 2.0, "cached": False}],
        "provenance": PROVENANCE,
    }


def by_section(findings):
    return {f["section"]: f["text"] for f in findings}


def test_findings_state_the_verdicts_the_numbers_imply_and_follow_them():
    res = planted_results()
    f = by_section(detection_findings(res))
    assert 3 <= len(detection_findings(res)) <= 6
    assert "detects every attack well" in f["table2"] and "0.930" in f["table2"] and "C&W" in f["table2"]
    # image-only ties on BIM (intervals overlap), falls behind on C&W (0.6–0.8 vs 0.9–0.96)
    assert "ties with the saliency detector on Iterative L∞" in f["baselines"]
    assert "falls behind the saliency detector on C&W" in f["baselines"]
    assert "2 of 6 train/test attack pairs are at chance" in f["cross-attack"] and "0.520" in f["cross-attack"]
    assert "adaptive" in f["second-round"] and "defeats" in f["second-round"] and "0.720" in f["second-round"]
    assert "supported" in f["generalisation-eps"]

    changed = copy.deepcopy(res)
    changed["table2"]["cw"] = row(0.55, 0.45, 0.65)
    changed["baselines"]["image"]["cw"] = row(0.99, 0.97, 1.0)
    changed["second_round"]["rows"][0].update(both=0.01, ci={"both": iv(0.01, 0.0, 0.03)})
    changed["cross_attack"]["matrix"] = [[0.99, 0.9, 0.8], [0.95, 0.98, 0.75], [0.8, 0.85, 0.95]]
    g = by_section(detection_findings(changed))
    assert "not distinguishable from chance" in g["table2"] and "0.550" in g["table2"]
    # the estimate clears 0.9 but its bootstrap interval does not: the verdict says so (one rule with the seeds')
    shaky = copy.deepcopy(res)
    shaky["table2"]["cw"] = row(0.93, 0.85, 0.97)
    h = by_section(detection_findings(shaky))
    assert "detects every attack well, but not reliably: on C&W" in h["table2"] and "0.850" in h["table2"]
    assert "beats the saliency detector on C&W" in g["baselines"]
    assert "does not get past" in g["second-round"]
    assert "every detector transfers" in g["cross-attack"]


def test_compare_uses_intervals_and_falls_back_to_a_margin():
    assert compare(iv(0.9, 0.8, 0.95), iv(0.93, 0.9, 0.97)) == "ties"
    assert compare(iv(0.99, 0.98, 1.0), iv(0.9, 0.85, 0.95)) == "higher"
    nan = float("nan")
    assert compare(iv(0.9, nan, nan), iv(0.905, nan, nan)) == "ties"
    assert compare(iv(0.8, nan, nan), iv(0.9, nan, nan)) == "lower"


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_images():
    rng = np.random.default_rng(0)
    widths = []
    for n in (40, 640):
        clean, adv = rng.normal(0, 1, n), rng.normal(1, 1, n)
        a = stats.auroc_interval(clean, adv)
        assert a["estimate"] == pytest.approx(roc_auc_score(np.r_[np.zeros(n), np.ones(n)], np.r_[clean, adv]))
        assert a["lo"] <= a["estimate"] <= a["hi"]
        r = stats.rate_interval(adv > 0.5)
        assert r["estimate"] == pytest.approx(np.mean(adv > 0.5)) and r["lo"] <= r["estimate"] <= r["hi"]
        widths.append((a["hi"] - a["lo"], r["hi"] - r["lo"]))
    assert widths[1][0] < widths[0][0] / 2 and widths[1][1] < widths[0][1] / 2  # ~1/√16 = 1/4 of the width
    assert stats.rate_interval(np.ones(10)) == {"estimate": 1.0, "lo": 1.0, "hi": 1.0, "n": 10}
    assert stats.intervals_overlap(iv(0.5, 0.4, 0.6), iv(0.55, 0.58, 0.7))
    assert not stats.intervals_overlap(iv(0.5, 0.4, 0.6), iv(0.65, 0.61, 0.7))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    run_dir.mkdir()
    old = os.umask(0o022)
    try:
        md, page = render_detection_report(run_dir, planted_results())
    finally:
        os.umask(old)
    return run_dir, md.read_text(), page.read_text()


def test_report_opens_with_provenance_findings_and_contents(rendered):
    _, md, page = rendered
    head = md.split("## Contents")[0]
    for v in ("0123456789", "torch 2.9.9", "Python 3.11.7", "cuda:0", "7 threads", "seed 42", "feedfacecafe",
              "2026-12-01", "12.5 s", "Linux-test", "detector seeds [0, 1, 2]"):
        assert v in head, v
    assert head.index("Produced by") < head.index("## Findings")
    # every finding links to a section that exists, in both files
    for f in detection_findings(planted_results()):
        assert f"(#{f['section']})" in md and f"id='{f['section']}'" in page
    assert page.index("class='findings'") < page.index("class='toc'") < page.index("id='setup'")
    # the paper's numbers in their own columns, not packed strings; one ε column per norm
    assert "0.99/0.12" not in md and "| f(x_test) ours | paper |" in md
    assert "| ε (L∞) | ε (L2) |" in md and "| Iterative L2 | – | 1.500 |" in md
    assert "1.000 [0.990, 1.000]" in md  # intervals in the main table
    # tables scroll instead of overflowing; timings grouped by stage type, the full list folded away
    assert "<div class='scroll'><table>" in page and "overflow-x:auto" in page
    assert "| adv | 4 | 2 | 2 | 2.0 |" in md and "| min-eps | 1 | 1 | 0 | 2.0 |" in md
    assert "<details><summary>all 6 stages</summary>" in page


def test_report_and_figures_are_readable_by_others_under_umask_0022(rendered):
    run_dir, _, _ = rendered
    files = [run_dir / "report.md", run_dir / "report.html", *(run_dir / "figures").glob("*.png")]
    assert len(files) >= 4  # roc, cross-attack and ε heatmaps
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, (path.name, oct(mode))


def test_findings_must_link_to_existing_sections(tmp_path):
    rep = Report("t")
    rep.heading("Results", anchor="results")
    rep.set_findings([{"text": "x", "section": "nowhere"}])
    with pytest.raises(ValueError, match="nowhere"):
        rep.write(tmp_path)


def test_stage_types_and_timing_summary():
    assert [stage_type(n) for n in ("adv-bim-train", "min-eps-s0-balanced", "cross-attack", "classifier")] == \
        ["adv", "min-eps", "cross-attack", "classifier"]
    rows = timings_summary([{"stage": "adv-a", "seconds": 1.5, "cached": False},
                            {"stage": "adv-b", "seconds": 9.0, "cached": True}])
    assert rows == [["adv", 2, 1, 1, 1.5]]


def test_progress_prints_one_line_per_loop_when_not_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    monkeypatch.setattr(progress, "LOG_MIN_SECONDS", 0.0)
    monkeypatch.setattr(progress, "_QUIET", False)
    with progress.Bar("craft bim", 3) as bar:
        for _ in range(3):
            bar.update(info="batch\nwith newline")
    list(progress.track(range(2), "scores"))
    out = capsys.readouterr().out
    assert out.splitlines() == [line for line in out.splitlines() if line.strip()]
    assert len(out.splitlines()) == 2 and out.startswith("craft bim: 3/3 in ") and "(batch with newline)" in out


def test_cli_log_to_a_file_has_no_blank_lines(tmp_path):
    log = tmp_path / "log.txt"
    exe = Path(sys.executable).with_name("advsal")
    with log.open("w") as fh:
        proc = subprocess.run([str(exe), "train", "--dataset", "digits", "--model", "resnet20", "--epochs", "1",
                               "--out", str(tmp_path / "m")], stdout=fh, stderr=subprocess.PIPE, text=True,
                              timeout=120, env={**os.environ, "COLUMNS": "40", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().split("\n")
    assert lines[-1] == "" and all(line.strip() for line in lines[:-1]), lines
    assert any("test accuracy" in line for line in lines)
    assert "\x1b[" not in log.read_text()  # no terminal control sequences


def test_security_finding_follows_the_robust_curve():
    res = planted_results()
    curve = {"eps": [0.05, 0.1, 0.3], "fpr": 0.05, "n": 50, "both": [0.02, 0.6, 0.9],
             "robust_tpr": [0.9, 0.3, 0.05], "robust_accuracy": [0.9, 0.4, 0.1], "fooled_any": [0.2, 0.8, 1.0]}
    res["security"] = {"attack": "bim", "eps_star": 0.1, "detectors": {"image+saliency": {"linf": curve}}}
    f = by_section(detection_findings(res))
    assert "Against an adaptive attacker the saliency detector fails" in f["security"]
    assert "0.60 of 50" in f["security"] and "ε* = 0.1" in f["security"] and "at ε = 0.3: 0.90" in f["security"]
    assert "D(x_adv) = 0.900" in f["security"]  # the first round's number beside it
    curve["both"] = [0.0, 0.02, 0.04]
    assert "holds" in by_section(detection_findings(res))["security"]
