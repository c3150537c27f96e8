"""Stages ``train@{arch}``, ``external@{name}`` and ``infer@{name}``: the lens finder, from cached stamps to scores.

- ``loader``: sharding, normalisation (``NormConfig``), augmentation and core dropout.
- ``colours``: host g-r and r-z measured from the raw stamp (colour conditioning).
- ``checkpoint``: the one place checkpoints are written, loaded, validated and turned back into
  a model with the normalisation and metadata statistics it was trained with.
- ``training``: ``TrainConfig`` and the training loop (single process or one DDP rank).
- ``inference``: scoring cached splits and nMgy arrays with a trained model or an external one
  (``load_finder``).
- ``external``: finders made elsewhere (ONNX, TorchScript, score tables): spec, checks, packing.
- ``export``: trained finders to ONNX and TorchScript with their spec; the stamps to score.
- ``stage``: the bodies of the three stages.
"""
