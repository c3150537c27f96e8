"""Training: every arch learns a little, resume is exact, DDP ranks see disjoint data and end
with identical weights, forbidden metadata and non-finite losses stop with a message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.conftest import REPO
from dhs.imaging.cache import open_split
from dhs.models.loader import NormConfig, iterate_batches
from dhs.models.registry import build_model
from dhs.models.spec import ModelSpec
from dhs.params.schema import ARCHS
from dhs.models.checkpoint import TrainingError, load_checkpoint
from dhs.finder.training import CURVE_EVERY, THROUGHPUT_FILE, TrainConfig, lr_at, train

HYBRID_META = ("psfsize_r", "psfdepth_r", "bad_pixel_frac")


def spec(arch, size=64):
    return ModelSpec(arch, size, metadata=HYBRID_META if arch == "hybrid" else ())


# the large torchvision nets take a minute each on a CPU: slow; small_cnn stays in the fast lane
@pytest.mark.parametrize("arch", [a if a == "small_cnn" else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
def test_each_arch_runs_on_64_and_96_px_and_a_few_steps_lower_the_loss(arch, sim_cache):
    torch.manual_seed(0)
    for size in (64, 96):
        m = build_model(spec(arch, size))
        x = torch.randn(2, 3, size, size)
        out = m(x, torch.randn(2, len(HYBRID_META))) if arch == "hybrid" else m(x)
        assert out.shape == (2,)
        out.sum().backward()
        assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    # a real simulated batch: the loss on it goes down
    split = open_split(sim_cache, "train")
    rows = np.arange(16)
    x, y, _ = next(iterate_batches(split, rows, 16, NormConfig.from_params({})))
    meta = torch.from_numpy(split.meta[list(HYBRID_META)].to_numpy(np.float32)[rows])
    model = build_model(spec(arch))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        logits = model(x, meta) if arch == "hybrid" else model(x)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # dropout and batch statistics of 16 stamps make single steps noisy: the last few, not the last one
    assert min(losses[-3:]) < losses[0], losses


def tree_bytes(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def small_cfg(**over) -> TrainConfig:
    arch = over.pop("arch", "small_cnn")
    p = {"epochs": 2, "steps_per_epoch": 4, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "eval_batch_size": 64, "device": "cpu", **over}
    return TrainConfig.from_params(p, arch)


# efficientnet_b0 draws dropout and stochastic depth (slow on a CPU)
@pytest.mark.parametrize("arch", ["small_cnn", pytest.param("efficientnet_b0", marks=pytest.mark.slow)])
def test_resume_after_interruption_gives_identical_weights(sim_cache, tmp_path, arch):
    cfg = small_cfg(arch=arch)
    norm = NormConfig.from_params({})
    straight = train(cfg, sim_cache, tmp_path / "a", norm, augment=True, progress=False, live_dir=tmp_path / "live_a")
    # the same run, stopped at the first epoch boundary, then resumed by a fresh call
    part = train(cfg, sim_cache, tmp_path / "b", norm, augment=True, progress=False, max_steps=4, live_dir=tmp_path / "live_b")
    assert part["completed"] is False and load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["step"] == 4
    # a kill between two checkpoints leaves curve points past the last one: they must not survive
    (tmp_path / "live_b/plots/metrics/train/loss.tsv").write_text("step\tloss\n0\t9.0\n5\t9.0\n")
    resumed = train(cfg, sim_cache, tmp_path / "b", norm, augment=True, progress=False, live_dir=tmp_path / "live_b")
    assert resumed["completed"] and resumed["history"] == straight["history"]
    # the curves of the resumed run are exactly those of the uninterrupted one, every point once
    assert tree_bytes(tmp_path / "live_a") == tree_bytes(tmp_path / "live_b")
    loss_steps = [int(line.split("\t")[0]) for line in (tmp_path / "live_a/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert loss_steps == list(range(0, 8, CURVE_EVERY))
    assert json.loads((tmp_path / "live_a/metrics.json").read_text())["step"] == 8
    a = load_checkpoint(tmp_path / "a" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["step"] == b["step"] == 8
    # best is chosen by val loss and test is scored with it
    assert straight["best"]["loss"] == min(h["val_loss"] for h in straight["history"])
    assert straight["test_at_best"]["n"] == len(open_split(sim_cache, "test"))


def test_checkpoints_load_with_weights_only_and_refuse_another_arch_or_size(sim_cache, tmp_path):
    train(small_cfg(epochs=1), sim_cache, tmp_path, NormConfig.from_params({}), augment=False, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint_best.pt", weights_only=True)
    model = build_model(spec("small_cnn"))
    model.load_state_dict(ckpt["model"])
    with pytest.raises(TrainingError, match="trained for arch=small_cnn stamp_size=64, not arch=resnet18"):
        load_checkpoint(tmp_path / "checkpoint_best.pt", spec("resnet18"))
    with pytest.raises(TrainingError, match="not arch=small_cnn stamp_size=96"):
        load_checkpoint(tmp_path / "checkpoint_best.pt", spec("small_cnn", 96))


def test_changed_params_start_afresh_instead_of_resuming(sim_cache, tmp_path, capsys):
    train(small_cfg(epochs=1), sim_cache, tmp_path, NormConfig.from_params({}), augment=False, progress=False)
    train(small_cfg(epochs=1, lr=1e-3), sim_cache, tmp_path, NormConfig.from_params({}), augment=False, progress=False)
    assert "made with other params; starting afresh" in capsys.readouterr().out


def test_a_finished_run_rebuilds_its_outputs_without_training(sim_cache, tmp_path, capsys):
    """DVC reruns the stage when a key that does not change the trajectory changes (train.archs,
    eval_batch_size, device) and deletes the curves first: the finished checkpoint gives them back,
    with the metrics, and nothing is trained."""
    first = train(small_cfg(epochs=1), sim_cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False, live_dir=tmp_path / "live")
    curves = tree_bytes(tmp_path / "live")
    ckpts = tree_bytes(tmp_path / "m")
    shutil.rmtree(tmp_path / "live")
    capsys.readouterr()
    again = train(small_cfg(epochs=1, eval_batch_size=32), sim_cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False,
                  live_dir=tmp_path / "live")
    assert "is a finished run with these params; outputs rebuilt from it, no training" in capsys.readouterr().out
    assert tree_bytes(tmp_path / "m") == ckpts                      # no step taken, nothing rewritten
    assert tree_bytes(tmp_path / "live") == curves and len(curves) >= 3
    for k in ("history", "best", "params_hash", "completed", "train_rows"):
        assert again[k] == first[k], k
    assert again["test_at_best"]["auc"] == pytest.approx(first["test_at_best"]["auc"], abs=1e-6)
    # without its best checkpoint a finished run cannot be rebuilt: it is trained again, identically
    (tmp_path / "m" / "checkpoint_best.pt").unlink()
    third = train(small_cfg(epochs=1), sim_cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False)
    assert "best.pt is missing; training again" in capsys.readouterr().out
    # identically but for the timing of the run that trained them
    retrained = tree_bytes(tmp_path / "m")
    timing = json.loads(retrained.pop(THROUGHPUT_FILE))
    assert third["history"] == first["history"] and retrained == {k: v for k, v in ckpts.items() if k != THROUGHPUT_FILE}
    assert timing["steps_timed"] == 4 and timing["images_per_s"] > 0 and timing["device_name"] == "cpu"
    assert timing["train_gflop_per_image"] > 0 and timing["fraction_of_peak"] is None   # no peak is guessed for a CPU


def test_non_finite_loss_stops_with_the_batch_named(sim_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(sim_cache, cache)
    images = np.load(cache / "train" / "images.npy", mmap_mode="r+")
    images[:] = np.nan  # every stamp: the first batch must trip the check
    images.flush()
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 0 .*batch rows .*task_ids \['sim"):
        train(small_cfg(), cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False)


def test_non_finite_loss_read_every_few_steps_still_names_the_first_bad_batch(sim_cache, tmp_path, monkeypatch):
    """On an accelerator the flag is read every few steps (no host sync per step): the error comes
    a few steps late but names the step and the batch where the loss first went non-finite."""
    import dhs.finder.training as training

    monkeypatch.setitem(training.NONFINITE_CHECK_EVERY, "cpu", 4)
    cache = tmp_path / "cache"
    shutil.copytree(sim_cache, cache)
    images = np.load(cache / "train" / "images.npy", mmap_mode="r+")
    images[:] = np.nan
    images.flush()
    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 0 .*batch rows .*task_ids \['sim"):
        train(small_cfg(), cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False)


def test_forbidden_metadata_and_bad_train_params_are_refused():
    for col in ("theta_e_arcsec", "arc_snr", "src_r_mag", "is_control", "magnification"):
        with pytest.raises(ValueError, match="carry the injection label"):
            TrainConfig.from_params({"hybrid_metadata": ["psfsize_r", col]}, "hybrid")
        with pytest.raises(ValueError, match="carry the injection label"):
            build_model(ModelSpec("hybrid", 64, metadata=("psfsize_r", col)))
    with pytest.raises(ValueError, match="unknown keys \\['lr_max'\\] in 'train'"):
        TrainConfig.from_params({"lr_max": 1.0}, "small_cnn")
    with pytest.raises(ValueError, match="unknown keys \\['resnet50'\\] in 'train.overrides'"):
        TrainConfig.from_params({"overrides": {"resnet50": {"lr": 1}}}, "small_cnn")
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(ModelSpec("vit", 64))


def test_production_preset_is_the_seed_config_and_schedule_shape():
    params = yaml.safe_load(open(REPO / "params.yaml"))["train"]
    prod = TrainConfig.from_params({**params, "preset": "production"}, "resnet18")
    assert (prod.epochs, prod.steps_per_epoch, prod.batch_size, prod.lr, prod.weight_decay) == (5, 5000, 256, 3e-4, 1e-4)
    cfg = small_cfg(epochs=10, steps_per_epoch=100, warmup_steps=50)
    lrs = [lr_at(s, cfg) for s in range(1000)]
    assert lrs[0] < lrs[49] == pytest.approx(cfg.lr) and lrs[-1] < 1e-3 * cfg.lr
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))


@pytest.mark.slow
def test_ddp_two_ranks_on_gloo_see_disjoint_rows_and_end_with_identical_weights(sim_cache, tmp_path):
    p = yaml.safe_load(open(REPO / "params.yaml"))
    n_train = len(open_split(sim_cache, "train"))
    # each rank's epoch covers its whole shard: 2 ranks x 8 per rank x steps >= n_train
    steps = int(np.ceil(n_train / 16))
    p["train"].update(nproc=2, device="cpu", epochs=1, steps_per_epoch=steps, batch_size=16, record_rows=True, eval_batch_size=64,
                      min_arc_snr=0.0, balance_classes=False)  # every train row once: the shards must cover them all
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--arch", "small_cnn", "--params", str(params),
                          "--cache", str(sim_cache), "--models", str(tmp_path / "models"), "--metrics", str(tmp_path / "metrics"),
                          "--live", str(tmp_path / "live")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    out = tmp_path / "models" / "small_cnn"
    seen = [set(np.load(out / f"seen_rank{r}.npy").tolist()) for r in range(2)]
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(n_train))
    w = [(out / f"weights_rank{r}.sha256").read_text() for r in range(2)]
    assert w[0] == w[1]
    metrics = yaml.safe_load((tmp_path / "metrics" / "small_cnn.json").read_text())
    assert metrics["world_size"] == 2 and (out / "checkpoint_best.pt").exists()


@pytest.mark.slow
def test_two_nodes_on_loopback_rendezvous_by_params_and_only_node_0_writes(sim_cache, tmp_path):
    """distributed.nnodes = 2: two launches of the stage script (node ranks 0 and 1, one process
    each) join at distributed.master_addr:master_port as one gloo job of world size 2; the ranks
    see disjoint rows and end with identical weights; only node 0 writes checkpoints and metrics."""
    import socket

    p = yaml.safe_load(open(REPO / "params.yaml"))
    n_train = len(open_split(sim_cache, "train"))
    steps = int(np.ceil(n_train / 16))
    p["train"].update(nproc=1, device="cpu", epochs=1, steps_per_epoch=steps, batch_size=16, record_rows=True, eval_batch_size=64,
                      min_arc_snr=0.0, balance_classes=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p["distributed"] = {"nnodes": 2, "master_addr": "127.0.0.1", "master_port": port}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, str(REPO / "stages" / "train.py"), "--arch", "small_cnn", "--params", str(params),
                               "--cache", str(sim_cache), "--models", str(tmp_path / f"node{k}" / "models"),
                               "--metrics", str(tmp_path / f"node{k}" / "metrics"), "--live", str(tmp_path / f"node{k}" / "live"),
                               "--node-rank", str(k)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (0, 1)]
    outs = [n.communicate(timeout=600) for n in nodes]
    for n, (o, e) in zip(nodes, outs):
        assert n.returncode == 0, o[-2000:] + e[-4000:]
    m0, m1 = tmp_path / "node0" / "models" / "small_cnn", tmp_path / "node1" / "models" / "small_cnn"
    seen = [set(np.load(m / f"seen_rank{r}.npy").tolist()) for m, r in ((m0, 0), (m1, 1))]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(n_train))
    assert (m0 / "weights_rank0.sha256").read_text() == (m1 / "weights_rank1.sha256").read_text()
    metrics = yaml.safe_load((tmp_path / "node0" / "metrics" / "small_cnn.json").read_text())
    assert metrics["world_size"] == 2 and (m0 / "checkpoint_best.pt").exists()
    assert not (tmp_path / "node1" / "metrics").exists() and not (m1 / "checkpoint_best.pt").exists()


def test_a_multi_node_run_needs_node_0s_address_and_a_node_rank_in_range(tmp_path):
    from dhs.finder.stage import torchrun_command
    from dhs.params import ParamsError, load

    p = yaml.safe_load(open(REPO / "params.yaml"))
    p["distributed"] = {"nnodes": 2}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(ParamsError, match="distributed.master_addr must name node 0"):
        load(tmp_path / "p.yaml")
    cmd = torchrun_command(4, {"nnodes": 3, "master_addr": "10.0.0.1", "master_port": 29600}, 2)
    assert "--nnodes=3" in cmd and "--node_rank=2" in cmd and "--master_addr=10.0.0.1" in cmd and "--nproc_per_node=4" in cmd
    assert "--standalone" in torchrun_command(2, {"nnodes": 1, "master_addr": None, "master_port": 29500}, 0)
    with pytest.raises(ParamsError, match="--node-rank 3 must be in"):
        torchrun_command(1, {"nnodes": 3, "master_addr": "h", "master_port": 1}, 3)


def test_new_data_retrains_instead_of_resuming(sim_cache, tmp_path, capsys):
    import pandas as pd

    train(small_cfg(epochs=1), sim_cache, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False)
    other = tmp_path / "cache"
    shutil.copytree(sim_cache, other)
    meta = pd.read_parquet(other / "train" / "meta.parquet")
    meta["task_id"] = meta["task_id"] + "-v2"  # another dataset of the same shape
    meta.to_parquet(other / "train" / "meta.parquet", index=False)
    capsys.readouterr()
    train(small_cfg(epochs=1), other, tmp_path / "m", NormConfig.from_params({}), augment=False, progress=False)
    assert "made with other params; starting afresh" in capsys.readouterr().out


def test_hybrid_metadata_missing_values_become_the_train_mean():
    from dhs.models.checkpoint import standardise

    m = np.array([[1.0, 24.0], [3.0, np.nan], [np.nan, 26.0], [2.0, np.inf]], dtype=np.float64)
    m[~np.isfinite(m)] = np.nan
    stats = {"mean": np.nanmean(m, 0).tolist(), "std": (np.nanstd(m, 0) + 1e-6).tolist()}
    z = standardise(m.astype(np.float32), stats)
    assert np.isfinite(z).all()
    assert z[2, 0] == 0 and z[1, 1] == 0 and z[3, 1] == 0
    np.testing.assert_allclose(z[[0, 1, 3], 0], [-1.2247, 1.2247, 0.0], atol=1e-3)


def test_the_code_digest_hashes_the_files_the_training_modules_import(tmp_path):
    """The resume digest covers every dhs file that the training loop and its batch sources may
    import (dhs.codebase.closure), less the ones that do not define the trajectory: a fix to one
    of them retrains, a change to the curves' writer does not, and where the checkout lies does not."""
    from dhs.finder.training import _source_digest, trajectory_files

    files = trajectory_files()
    assert files == sorted(files)
    for f in ("dhs/finder/training.py", "dhs/finder/batches.py", "dhs/finder/rows.py", "dhs/finder/fresh.py", "dhs/models/loader.py",
              "dhs/models/small_cnn.py", "dhs/models/checkpoint.py", "dhs/imaging/cache.py", "dhs/contract/norm_stats.py"):
        assert f in files, f
    assert not [f for f in files if f.startswith(("dhs/simulate/", "dhs/params/")) or f in ("dhs/finder/curves.py", "dhs/atomic.py", "dhs/codebase.py")]
    copy = tmp_path / "checkout"
    shutil.copytree(REPO / "dhs", copy / "dhs", ignore=shutil.ignore_patterns("__pycache__"))
    assert _source_digest(copy) == _source_digest()
    curves = copy / "dhs" / "finder" / "curves.py"
    curves.write_text(curves.read_text() + "\n# a comment\n")
    assert _source_digest(copy) == _source_digest()
    loader = copy / "dhs" / "models" / "loader.py"
    loader.write_text(loader.read_text() + "\n# a fix\n")
    assert _source_digest(copy) != _source_digest()


def test_train_and_simulate_devices_follow_one_rule():
    """auto: a DDP rank's own GPU for training, the current GPU for rendering, the CPU without
    one; a CUDA device torch does not see is refused with the params key named."""
    from dhs.models.checkpoint import resolve_device as train_device
    from dhs.simulate.survey import resolve_device as simulate_device

    assert train_device("cpu") == simulate_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert train_device("auto", local_rank=1) == torch.device("cuda:1") and train_device("auto") == torch.device("cuda:0")
        assert simulate_device("auto") == torch.device("cuda")
        return
    assert train_device("auto", local_rank=1) == simulate_device("auto") == torch.device("cpu")
    with pytest.raises(TrainingError, match="train.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'"):
        train_device("cuda")
    with pytest.raises(RuntimeError, match="simulate.device is 'cuda:1' but torch sees no CUDA device"):
        simulate_device("cuda:1")
