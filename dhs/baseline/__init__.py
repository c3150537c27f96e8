"""Stage ``baseline``: metadata-only models on the cached stamp metadata (no pixels).

- ``config``: ``BaselineConfig`` and the rules on which columns each model may see.
- ``models``: the leak detector and the seed's scalar baseline, with their row accounting.
- ``stage``: the body of the stage.
"""
