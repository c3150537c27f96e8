"""Bad input at the boundary of every stage ends in one line naming the file and what to fix:
a params file that is not valid YAML or gives a key twice, a finder name that would become a path
outside the project, more training ranks than the machine has devices."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dhs.params import ParamsError, load
from tests.conftest import REPO

BASE = (REPO / "params.yaml").read_text()


def stage(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / script), *args], cwd=cwd, capture_output=True, text=True)


def test_a_params_file_that_is_not_yaml_is_one_line_with_its_line(tmp_path):
    (tmp_path / "params.yaml").write_text(BASE.replace("  lr: 2.0e-3", "  lr: [2.0e-3", 1))
    res = stage("report.py", "--params", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    line = [ln for ln in res.stderr.splitlines() if "FAILED" in ln]
    assert len(line) == 1 and "params.yaml: line" in line[0] and "not valid YAML" in line[0], res.stderr


def test_a_key_given_twice_is_refused_not_silently_replaced(tmp_path):
    # a second train block at the end: plain YAML would train with its lr
    (tmp_path / "params.yaml").write_text(BASE + "\ntrain:\n  lr: 5.0\n")
    with pytest.raises(ParamsError, match=r"key 'train' given twice \(lines \d+ and \d+\); keep one"):
        load(tmp_path / "params.yaml")
    nested = BASE.replace("  epochs: 5\n", "  epochs: 5\n  epochs: 50\n", 1)
    assert nested != BASE
    (tmp_path / "params.yaml").write_text(nested)
    with pytest.raises(ParamsError, match="key 'epochs' given twice"):
        load(tmp_path / "params.yaml")


@pytest.mark.parametrize("script", ["infer.py", "gates.py", "external.py"])
@pytest.mark.parametrize("name", ["../..", "small_cnn/../../x", "A B", ""])
def test_a_finder_name_that_would_leave_the_project_is_refused(tmp_path, script, name):
    (tmp_path / "params.yaml").write_text(BASE)
    res = stage(script, "--arch", name, "--params", str(tmp_path / "params.yaml"), cwd=tmp_path)
    assert res.returncode == 2 and f"--arch {name!r} is not a finder name" in res.stderr, res.stderr[-1500:]
    assert not any(tmp_path.parent.glob("*.json")) and sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_more_training_ranks_than_the_machine_has_are_refused_before_anything_starts(tmp_path):
    p = yaml.safe_load(BASE)
    p["train"].update(nproc=64, device="cpu")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    res = stage("train.py", "--arch", "small_cnn", "--params", str(tmp_path / "params.yaml"), "--cache", str(tmp_path / "none"),
                cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-1500:]
    assert "train.nproc is 64 but this machine has" in res.stderr and "set train.nproc <=" in res.stderr
    assert "torch.distributed" not in res.stdout + res.stderr


def test_completeness_run_before_infer_says_which_stage_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text(BASE)
    res = stage("completeness.py", "--arch", "small_cnn", "--params", str(tmp_path / "params.yaml"), "--scores",
                str(tmp_path / "scores"), "--metrics", str(tmp_path / "m"), "--plots", str(tmp_path / "p"), cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "small_cnn.parquet not found: the score table of small_cnn comes from `dvc repro infer@small_cnn`" in res.stderr


def test_a_known_lens_catalogue_with_an_unbalanced_quote_is_one_line(tmp_path):
    from dhs.known_lenses.catalog import DEFAULT_PATH, CatalogError, read_catalog

    lines = DEFAULT_PATH.read_text().splitlines(keepends=True)
    first = next(i for i, ln in enumerate(lines) if not ln.startswith("#")) + 1   # the first data row
    lines[first] = '"' + lines[first]                                              # a quote that never closes
    (tmp_path / "cat.csv").write_text("".join(lines))
    with pytest.raises(CatalogError, match=r"cat.csv: an unbalanced quote: column .name. of the row at line \d+ runs over"):
        read_catalog(tmp_path / "cat.csv")


def _mount_tiny_tmpfs(path, size="8k") -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def test_a_full_disk_is_one_line_naming_the_path_and_the_previous_output_survives(tmp_path):
    """A real full file system (a tmpfs of two pages; mounting needs root, else the test skips):
    the stage says which path's device is full and that nothing was lost, without a traceback,
    and the previous output is there byte for byte, with no temporary left beside it."""
    full = tmp_path / "full"
    if not _mount_tiny_tmpfs(full):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (full / "index.html").write_text("<p>the previous report</p>")
        (tmp_path / "params.yaml").write_text(BASE)
        res = stage("report.py", "--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path), "--out",
                    str(full / "index.html"), cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert f"no space left on the device holding {full / 'index.html'}" in res.stderr and "Nothing was lost" in res.stderr
        assert (full / "index.html").read_text() == "<p>the previous report</p>"
        assert sorted(p.name for p in full.iterdir()) == ["index.html"]
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)
