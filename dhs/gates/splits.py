"""Split integrity (docs/conventions.md, evaluation rules) on the cache metadata that training actually used.

Three checks over train, val and test together:
- no ``region_id`` in two splits;
- no host position in two splits: positions are keyed exactly as the stamp contract's validator
  keys them (``dhs.contract.validate``: ra and dec rounded to ``HOST_MATCH_ARCSEC`` = 1 arcsec,
  null positions ignored via ``NO_KEY``), and, where a ``host_id`` column exists, no host_id in
  two splits either;
- no ``task_id`` twice anywhere (one stamp, one row: duplicates corrupt completeness counts).

The validator runs these checks on the parquet shards when the stamps stage reads them; this
gate repeats them on what the cache holds, so a cache assembled or relabelled later (e.g. the
earlier pipeline's val-to-train relabel by task hash) cannot slip through.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dhs.contract.validate import NO_KEY, host_keys
from dhs.gates.result import gate_result

SPLIT_RULE = "no region_id, host position or host_id in two splits, no duplicate task_id"
MAX_EXAMPLES = 5


def _shared(values_by_split: Mapping[str, np.ndarray]) -> dict:
    """{value: sorted splits} for values present in more than one split (NO_KEY/null ignored)."""
    seen: dict = {}
    for split, vals in values_by_split.items():
        for v in pd.unique(pd.Series(vals).dropna()):
            if v == NO_KEY:
                continue
            seen.setdefault(v, set()).add(split)
    return {k: sorted(v) for k, v in seen.items() if len(v) > 1}


def split_integrity_gate(metas: Mapping[str, pd.DataFrame]) -> dict:
    """metas: split name -> its metadata (needs task_id, region_id, ra, dec; host_id optional)."""
    name = "split_integrity"
    missing = sorted({c for m in metas.values() for c in ("task_id", "region_id", "ra", "dec") if c not in m.columns})
    if missing:
        return gate_result(name, "FAIL", None, 0, SPLIT_RULE, f"metadata lacks column(s) {missing}: split integrity cannot be verified")
    regions = _shared({s: m["region_id"].to_numpy() for s, m in metas.items()})
    hosts = _shared({s: host_keys(m["ra"].to_numpy(), m["dec"].to_numpy()) for s, m in metas.items()})
    host_ids = _shared({s: m["host_id"].to_numpy() for s, m in metas.items()}) if all("host_id" in m for m in metas.values()) else {}
    ids = pd.concat([m["task_id"].astype(str) for m in metas.values()], ignore_index=True)
    dup = ids[ids.duplicated(keep=False)].unique()
    counts = {"regions_in_two_splits": len(regions), "host_positions_in_two_splits": len(hosts),
              "host_ids_in_two_splits": len(host_ids), "duplicate_task_ids": int(len(dup))}
    n_bad = sum(counts.values())
    examples = {"regions": {str(k): v for k, v in list(regions.items())[:MAX_EXAMPLES]},
                "host_positions": {str(k): v for k, v in list(hosts.items())[:MAX_EXAMPLES]},
                "host_ids": {str(k): v for k, v in list(host_ids.items())[:MAX_EXAMPLES]},
                "task_ids": [str(t) for t in dup[:MAX_EXAMPLES]]}
    if n_bad == 0:
        detail = f"{sum(len(m) for m in metas.values())} rows in {len(metas)} splits: regions, hosts and task_ids are disjoint"
    else:
        detail = "; ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v) + \
            " (see examples): split by region and deduplicate task_id before training"
    return gate_result(name, "PASS" if n_bad == 0 else "FAIL", n_bad, 0, SPLIT_RULE, detail,
                       rows_by_split={s: len(m) for s, m in metas.items()}, examples=examples, **counts)
