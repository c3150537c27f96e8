"""Checkpoint load failures end in one message naming the file and what to do (never a raw
torch traceback, never advice to load with weights_only=False), and a checkpoint_last.pt that
cannot be resumed is set aside so training starts afresh; training refuses, before any work, a
cache without the splits it reads and a NaN theta_E it would regress on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from dhs.models.checkpoint import CheckpointError, TrainingError, load_checkpoint, load_trained
from dhs.models.loader import NormConfig
from dhs.finder.training import train
from tests.conftest import REPO
from tests.finder.test_training import small_cfg, spec


class Payload:
    """A pickle that would run a command when loaded without weights_only (it never is)."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/dhs-checkpoint-pwned",))


@pytest.fixture(scope="module")
def trained(sim_cache, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("trained")
    train(small_cfg(epochs=1), sim_cache, d, NormConfig.from_params({}), augment=False, progress=False)
    return d


def damage(path: Path, how: str, good: Path) -> None:
    data = good.read_bytes()
    if how == "malicious":
        torch.save({"model": {}, "spec": {"arch": "small_cnn", "stamp_size": 64}, "step": 1, "params_hash": "x",
                    "extra": Payload()}, path)
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"hello, not a checkpoint")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "missing_key":
        ckpt = torch.load(good, weights_only=True)
        ckpt.pop("params_hash")
        torch.save(ckpt, path)
    elif how == "not_a_dict":
        torch.save([1, 2, 3], path)


CASES = {"malicious": "refused: it holds Python objects", "truncated": "not a readable checkpoint: truncated or damaged",
         "garbage": "not a readable checkpoint: truncated or damaged", "empty": "not a readable checkpoint",
         "missing_key": "lacks ['params_hash']", "not_a_dict": "holds a list, not a checkpoint"}


@pytest.mark.parametrize("how", list(CASES))
def test_each_load_failure_is_one_message_naming_the_file_and_what_to_do(trained, tmp_path, how):
    path = tmp_path / "checkpoint_best.pt"
    damage(path, how, trained / "checkpoint_best.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and CASES[how] in msg, msg
    assert "weights_only" not in msg and "trusted source" not in msg and "add_safe_globals" not in msg
    assert "dvc repro train" in msg and "\n" not in msg
    assert not Path("/tmp/dhs-checkpoint-pwned").exists()


def test_another_arch_or_size_names_the_file(trained):
    with pytest.raises(CheckpointError, match=rf"{trained}/checkpoint_best.pt: was trained for arch=small_cnn stamp_size=64, "
                                              r"not arch=resnet18"):
        load_checkpoint(trained / "checkpoint_best.pt", spec("resnet18"))
    with pytest.raises(CheckpointError, match="holds a small_cnn model, not resnet18"):
        load_trained(trained, "cpu", arch="resnet18")


def _params(tmp: Path, **train_over) -> Path:
    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["train"].update({"epochs": 1, "steps_per_epoch": 4, "batch_size": 16, "warmup_steps": 2, "eval_batch_size": 64,
                       "device": "cpu", **train_over})
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_a_damaged_best_checkpoint_fails_the_infer_stage_with_one_line(trained, sim_cache, tmp_path):
    models = tmp_path / "models" / "small_cnn"
    models.mkdir(parents=True)
    damage(models / "checkpoint_best.pt", "malicious", trained / "checkpoint_best.pt")
    res = subprocess.run([sys.executable, str(REPO / "stages" / "infer.py"), "--arch", "small_cnn", "--params",
                          str(_params(tmp_path)), "--cache", str(sim_cache), "--models", str(tmp_path / "models"),
                          "--scores", str(tmp_path / "scores"), "--metrics", str(tmp_path / "m")],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"infer small_cnn: FAILED: {models / 'checkpoint_best.pt'}: refused") and "Traceback" not in res.stderr
    assert "weights_only" not in res.stderr


@pytest.mark.parametrize("how", ["truncated", "malicious", "missing_key"])
def test_an_unusable_checkpoint_last_is_set_aside_and_training_starts_afresh(trained, sim_cache, tmp_path, capsys, how):
    from dhs.finder.stage import run_train

    models = tmp_path / "models"
    (models / "small_cnn").mkdir(parents=True)
    last = models / "small_cnn" / "checkpoint_last.pt"
    damage(last, how, trained / "checkpoint_last.pt")
    damaged = last.read_bytes()
    assert run_train("small_cnn", str(_params(tmp_path)), str(sim_cache), str(models), str(tmp_path / "metrics"),
                     str(tmp_path / "live")) == 0
    err = capsys.readouterr().err
    aside = models / "unusable" / "small_cnn" / "checkpoint_last.pt"
    assert f"train small_cnn: {last} cannot be used" in err and f"moved to {aside}; training starts afresh" in err
    assert aside.read_bytes() == damaged
    assert load_checkpoint(last)["step"] == 4 and (tmp_path / "metrics" / "small_cnn.json").exists()
    # the next run resumes from the new checkpoint as usual: nothing more is set aside
    run_train("small_cnn", str(_params(tmp_path)), str(sim_cache), str(models), str(tmp_path / "metrics"), str(tmp_path / "live"))
    assert "cannot be used" not in capsys.readouterr().err


def test_a_nan_theta_e_never_becomes_a_regression_target(sim_cache, tmp_path):
    from dhs.finder.stage import run_train

    cache = tmp_path / "cache"
    shutil.copytree(sim_cache, cache)
    meta = pd.read_parquet(cache / "train" / "meta.parquet")
    i = int((meta["is_control"] == 0).to_numpy().nonzero()[0][0])
    meta.loc[i, "theta_e_arcsec"] = float("nan")   # a cache written before validation rejected these
    meta.to_parquet(cache / "train" / "meta.parquet", index=False)
    with pytest.raises(TrainingError, match=r"1 cached train injection\(s\) have no finite theta_e_arcsec > 0") as e:
        run_train("small_cnn", str(_params(tmp_path, theta_head=True)), str(cache), str(tmp_path / "models"),
                  str(tmp_path / "metrics"), str(tmp_path / "live"))
    assert meta.loc[i, "task_id"] in str(e.value)
    assert not (tmp_path / "models" / "small_cnn" / "checkpoint_last.pt").exists()
