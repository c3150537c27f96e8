"""train.data: simulate: batches rendered on the fly by the survey simulator, deterministic by
(seed, step, rank), the engine's own stamps, every rendered stamp accounted for; training on
them resumes exactly and refuses real data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dhs.models.checkpoint import load_checkpoint
from dhs.finder.fresh import BELOW_MIN_SNR, SURPLUS, USED, FreshBatches
from dhs.models.loader import NormConfig
from dhs.finder.training import TrainConfig, train
from dhs.simulate.config import SimConfig
from dhs.simulate.survey import render_batches
from dhs.imaging.cache import open_split
from tests.conftest import copy_repo, small_sim_params


@pytest.fixture(scope="module")
def sim() -> SimConfig:
    # eager: a training run renders without end, so `auto` compiles it whatever the size, and these
    # few blocks would spend ~30 s a test process tracing kernels (compiled against eager rendering
    # is tests/simulate/test_fused.py's)
    return SimConfig.from_params(small_sim_params(compile="off"))


def fresh(sim, rank=0, seed=1, **kw) -> FreshBatches:
    return FreshBatches(sim, 16, seed, rank, torch.device("cpu"), **{"min_arc_snr": 2.0, "positive_fraction": 0.5, "block_stamps": 64, **kw})


def test_a_batch_is_a_function_of_seed_step_and_rank(sim):
    a, b = fresh(sim), fresh(sim)
    xa, ya, ra = a.batch(5)
    # b starts at step 5 without having drawn steps 0-4 (a resumed run)
    xb, yb, rb = b.batch(5)
    assert torch.equal(xa, xb) and torch.equal(ya, yb) and ra["task_id"].tolist() == rb["task_id"].tolist()
    # another step, another rank, another seed: other stamps
    for other in (a.batch(6)[0], fresh(sim, rank=1).batch(5)[0], fresh(sim, seed=2).batch(5)[0]):
        assert other.shape == xa.shape and not torch.equal(other, xa)


def test_blocks_hold_the_label_fraction_and_only_visible_arcs_and_count_every_stamp(sim):
    f = fresh(sim)
    x, y, rows = zip(*(f.batch(s) for s in range(f.steps_per_block)))
    y, rows = torch.cat(y).numpy(), __import__("pandas").concat(rows)
    assert len(y) == 64 and y.sum() == 32  # exact per block
    assert (rows["is_control"].to_numpy() == 1 - y).all()
    inj = rows[rows["is_control"] == 0]
    assert (inj["arc_snr"] >= 2.0).all() and (rows.loc[rows["is_control"] == 1, "arc_snr"] == 0).all()
    assert rows["task_id"].is_unique
    c = f.counts
    assert c[USED] == 64 and c[BELOW_MIN_SNR] > 0  # the physical population reaches below detectability
    # every rendered injection is either used, too faint, or beyond what the block needed
    assert sum(c.values()) == 32 + 32 + c[BELOW_MIN_SNR] + c[SURPLUS]
    assert np.isfinite(torch.cat(x).numpy()).all()


def test_rendered_batches_are_the_stamps_stage_engine_pixels(sim):
    """The controls of block 0 re-rendered by the stamps stage's own path (render_batches, as
    written to parquet) give the same pixels, rounded through the cache's float16."""
    f = fresh(sim)
    x, _, rows = f.batch(0)
    pop, cfg = f._population(32, 1.0, 0, 0)
    by_task = {}
    for batch in render_batches(pop, cfg, torch.device("cpu")):
        by_task.update(zip(batch.rows["task_id"], batch.images))
    controls = np.flatnonzero(rows["is_control"].to_numpy() == 1)
    assert len(controls) > 0
    for i in controls:
        ref = torch.from_numpy(by_task[rows["task_id"].iloc[i]]).half().float()
        assert torch.equal(x[i], ref)


def small_cfg(**over) -> TrainConfig:
    p = {"epochs": 2, "steps_per_epoch": 4, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "eval_batch_size": 64,
         "device": "cpu", "data": "simulate", "simulate_block_stamps": 32, "min_arc_snr": 2.0, "balance_classes": True, **over}
    return TrainConfig.from_params(p, "small_cnn")


def test_training_on_rendered_batches_resumes_exactly_and_accounts_for_every_stamp(sim_cache, sim, tmp_path):
    cfg, norm = small_cfg(), NormConfig.from_params(dict(radial_profile_subtract=True, shift_px=1))
    straight = train(cfg, sim_cache, tmp_path / "a", norm, augment=True, progress=False, sim=sim)
    part = train(cfg, sim_cache, tmp_path / "b", norm, augment=True, progress=False, max_steps=4, sim=sim)
    assert part["completed"] is False
    resumed = train(cfg, sim_cache, tmp_path / "b", norm, augment=True, progress=False, sim=sim)
    assert resumed["completed"] and resumed["history"] == straight["history"]
    a, b = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt"), load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    rows = straight["train_rows"]
    assert straight["data"] == "simulate" and straight["n_train"] == rows["used"] == 2 * 4 * 16
    assert rows["rendered"] == rows["used"] + sum(rows["excluded"].values())
    assert resumed["train_rows"]["from_step"] == 4 and resumed["train_rows"]["used"] == 4 * 16  # only what it drew
    # validated and tested on the cached stamps, as with cache training
    assert straight["test_at_best"]["n"] == len(open_split(sim_cache, "test"))
    assert straight["best"]["loss"] == min(h["val_loss_selected"] for h in straight["history"])
    # a cache-trained run is another trajectory: it starts afresh, never resumes this one
    assert a["params_hash"] != train(small_cfg(data="cache", epochs=1), sim_cache, tmp_path / "c", norm, augment=True,
                                     progress=False)["params_hash"]


def test_the_stage_refuses_rendered_batches_for_real_stamps(tmp_path):
    work, env = copy_repo(tmp_path / "w", n_stamps=40)
    p = yaml.safe_load((work / "params.yaml").read_text())
    p["stamps"]["source"] = str(tmp_path / "real")
    p["train"]["data"] = "simulate"
    (work / "params.yaml").write_text(yaml.safe_dump(p))
    r = subprocess.run([sys.executable, "stages/train.py", "--arch", "small_cnn"], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "train.data is 'simulate'" in r.stderr and "stamps.source" in r.stderr and "train.data: cache" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.gpu
def test_rendered_batches_on_the_gpu_are_the_cpu_batches(sim):
    """Keyed random numbers make a stamp independent of the device: the same rows, labels and,
    to float32 rounding of the FFTs, the same pixels on CUDA as on the CPU."""
    cpu, gpu = fresh(sim), FreshBatches(sim, 16, 1, 0, torch.device("cuda"), min_arc_snr=2.0, positive_fraction=0.5, block_stamps=64)
    (xc, yc, rc), (xg, yg, rg) = cpu.batch(1), gpu.batch(1)
    assert rc["task_id"].tolist() == rg["task_id"].tolist() and torch.equal(yc, yg.cpu())
    peak = xc.abs().amax()
    assert ((xg.cpu() - xc).abs().amax() / peak) < 2e-3  # float16 rounding of the cache dtype included


def test_balancing_by_condition_cells_is_refused_for_rendered_batches(sim_cache, sim, tmp_path):
    from dhs.models.checkpoint import TrainingError

    with pytest.raises(TrainingError, match="exactly balanced already: set train.balance_by: \\[\\]"):
        train(small_cfg(balance_by=["psfdepth_r"]), sim_cache, tmp_path, NormConfig.from_params({}), augment=False, progress=False, sim=sim)


def test_the_run_fingerprint_follows_the_simulator_code(sim, tmp_path):
    # a fix to the renderer changes the batches a `train.data: simulate` run learns from, so it
    # must change the run's hash (else `dvc repro` rebuilds a finished run from the old checkpoint)
    import shutil

    import dhs.simulate
    from dhs.finder.fresh import simulator_source_digest

    here = Path(dhs.simulate.__file__).parent
    copy = tmp_path / "simulate"
    shutil.copytree(here, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert simulator_source_digest(copy) == simulator_source_digest()
    assert fresh(sim).fingerprint().endswith(":" + simulator_source_digest())
    (copy / "render.py").write_text((copy / "render.py").read_text() + "\n# a one-line fix\n")
    assert simulator_source_digest(copy) != simulator_source_digest()
    shutil.copytree(here, tmp_path / "again", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "again" / "new_profile.py").write_text("")
    assert simulator_source_digest(tmp_path / "again") != simulator_source_digest()


def test_the_simulator_digest_covers_the_code_it_imports_outside_its_package():
    """The physical population's coefficients and the prior forms live in dhs/params; a change to
    them changes the rendered batches, so the digest holds them."""
    from dhs.finder.fresh import simulator_imports
    from tests.conftest import REPO

    rel = {f.relative_to(REPO).as_posix() for f in simulator_imports()}
    assert {"dhs/params/physical.py", "dhs/params/priors.py"} <= rel
    assert not any(r.startswith("dhs/simulate/") for r in rel)

