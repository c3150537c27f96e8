"""Stage ``train@{arch}``: a lens finder trained on the cached train split (or on batches rendered
fresh), selected on val.

- ``training``: ``TrainConfig`` and the training loop (single process or one DDP rank).
- ``batches``: the loop's batch sources, one per ``train.data``: the cached train split
  (``CachedBatches``) or batches rendered by the simulator (``RenderedBatches``).
- ``rows``: the rows of the cached train split a finder learns from, and how often.
- ``fresh``: batches rendered on the fly by the simulator (``train.data: simulate``).
- ``curves``: the dvclive curves; ``throughput``: images/s and the GPU's share of its peak.
- ``stage``: the body of the stage.

Preprocessing, checkpoints and scoring are library code in ``dhs.models``.
"""
