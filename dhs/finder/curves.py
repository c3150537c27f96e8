"""The training curves in dvclive's layout, written whole from what the checkpoint holds.

``<live_dir>/plots/metrics/{train,val}/<name>.tsv`` (``step<TAB><name>`` rows, what `dvc plots`
reads) and ``<live_dir>/metrics.json`` (the last value of each). The curves are rebuilt from the
per-step record kept in ``checkpoint_last.pt`` each time they are written, never appended to:
a resumed run then shows exactly the curves of an uninterrupted one, and a stage that DVC reruns
on a finished checkpoint rewrites them without training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dhs import atomic

# history keys (per epoch) drawn as val curves, and the name of each curve
VAL_CURVES = {"val_loss": "loss", "val_auc": "auc", "val_loss_selected": "loss_selected", "val_auc_selected": "auc_selected"}


def _tsv(name: str, points: Sequence[tuple[int, float]]) -> str:
    return f"step\t{name}\n" + "".join(f"{int(s)}\t{float(v)!r}\n" for s, v in points)


def write_curves(live_dir: str | Path, curve: Sequence[Sequence[float]], history: Sequence[Mapping]) -> None:
    """``curve``: [step, train_loss, lr] rows; ``history``: the per-epoch records of training."""
    live_dir = Path(live_dir)
    files = {"train/loss": [(r[0], r[1]) for r in curve], "train/lr": [(r[0], r[2]) for r in curve]}
    for key, name in VAL_CURVES.items():
        pts = [(h["step"], h[key]) for h in history if key in h]
        if pts:
            files[f"val/{name}"] = pts
    # a curve another run left (another arch config, an older version) is not this run's
    for old in (live_dir / "plots" / "metrics").rglob("*.tsv") if (live_dir / "plots" / "metrics").is_dir() else ():
        if old.relative_to(live_dir / "plots" / "metrics").with_suffix("").as_posix() not in files:
            old.unlink()
    summary: dict = {}
    for rel, pts in files.items():
        group, name = rel.split("/")
        atomic.write_text(live_dir / "plots" / "metrics" / group / f"{name}.tsv", _tsv(name, pts))
        if pts:
            summary.setdefault(group, {})[name] = float(pts[-1][1])
    steps = [int(r[0]) for r in curve] + [int(h["step"]) for h in history]
    summary["step"] = max(steps) if steps else 0
    atomic.write_json(live_dir / "metrics.json", summary)
