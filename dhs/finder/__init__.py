"""Stages ``train@{arch}`` and ``infer@{arch}``: the lens finder, from cached stamps to scores.

- ``loader``: sharding, normalisation (``NormConfig``), augmentation and core dropout.
- ``colours``: host g-r and r-z measured from the raw stamp (colour conditioning).
- ``checkpoint``: the one place checkpoints are written, loaded, validated and turned back into
  a model with the normalisation and metadata statistics it was trained with.
- ``training``: ``TrainConfig`` and the training loop (single process or one DDP rank).
- ``inference``: scoring cached splits and nMgy arrays with a trained model.
- ``stage``: the bodies of the two stages.
"""
