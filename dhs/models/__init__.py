"""Lens finders as objects: the architectures, their preprocessing, checkpoints and scoring.

- ``spec``: the arch names, ``ModelSpec`` and the metadata the hybrid may not see (no torch).
- ``registry``: ``build_model(spec)``.
- ``small_cnn``, ``torchvision_nets``, ``hybrid``: the networks; ``heads``: theta_E head and colour inputs.
- ``loader``: sharding, normalisation (``NormConfig``), augmentation and core dropout.
- ``colours``: host g-r and r-z measured from the raw stamp (colour conditioning).
- ``checkpoint``: the one place checkpoints are written, loaded, validated and turned back into
  a model with the normalisation and metadata statistics it was trained with.
- ``inference``: scoring cached splits and nMgy arrays with a trained model or an external one
  (``load_finder``).
- ``external``: finders made elsewhere (ONNX, TorchScript, score tables): spec, checks, packing.
- ``export``: trained finders to ONNX and TorchScript with their spec; the stamps to score.

Every network maps a (B, C, H, W) normalised stamp (and, for the hybrid, a (B, M) metadata
vector) to one logit.
"""
