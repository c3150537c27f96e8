"""summary.json: the handful of numbers per finder DVC shows, taken from the stages' headline files
(the committed default run's), null where a stage has not run."""

from __future__ import annotations

import json
import shutil

from tests.conftest import REPO
from dhs import headline


def test_the_summary_carries_each_finders_numbers_from_the_headline_files(tmp_path):
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    s = headline.summary(tmp_path, ["small_cnn", "resnet18"])
    comp = json.loads((REPO / "metrics/completeness/small_cnn.headline.json").read_text())
    gates = json.loads((REPO / "metrics/gates/small_cnn.headline.json").read_text())
    cal = json.loads((REPO / "metrics/calibration/small_cnn.headline.json").read_text())
    row = s["small_cnn"]
    assert row["auroc"] == comp["auroc"] and row["gates"] == gates["verdict"] and row["ece_after"] == cal["ece_after"]
    h = comp["fpr_0.01"]
    assert {k: v for k, v in row.items() if k not in ("auroc", "gates", "calibration", "ece_after", "known_lenses")} == {
        "fpr": 0.01, "threshold": h["threshold"], "low_count": h["low_count"], "all": h["sky"], "all_lo": h["sky_boot_lo"],
        "all_hi": h["sky_boot_hi"], "discoverable": h["discoverable"], "discoverable_lo": h["discoverable_boot_lo"],
        "discoverable_hi": h["discoverable_boot_hi"]}
    assert row["all_lo"] <= row["all"] <= row["all_hi"]
    assert headline.summary(tmp_path, ["small_cnn"], "fpr_0.001")["small_cnn"]["all"] == comp["fpr_0.001"]["sky"]
    # a finder no stage has run for: nulls, never another finder's numbers
    assert s["resnet18"] == {"auroc": None, "gates": None, "calibration": None, "ece_after": None, "known_lenses": None}
    assert s["data"] == {"source": "synthetic"}
    assert len(row) <= 15      # a handful of numbers: one short line per finder at the terminal


def test_without_sky_weights_the_summary_quotes_every_injection(tmp_path):
    (tmp_path / "metrics/completeness").mkdir(parents=True)
    h = {"auroc": 0.9, "fpr_0.01": {"threshold": 0.8, "low_count": False, "all": 0.5, "all_boot_lo": 0.4, "all_boot_hi": 0.6}}
    (tmp_path / "metrics/completeness/real.headline.json").write_text(json.dumps(h))
    s = headline.summary(tmp_path, ["real"])
    assert {k: s["real"][k] for k in ("fpr", "threshold", "all", "all_lo", "all_hi")} == {
        "fpr": 0.01, "threshold": 0.8, "all": 0.5, "all_lo": 0.4, "all_hi": 0.6} and "discoverable" not in s["real"]
