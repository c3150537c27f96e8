"""Stages ``infer@{name}`` and ``external@{name}``: scores for every val and test stamp.

- ``stage``: the body of ``infer``: every stamp of the scored splits scored once, the score table.
- ``packing``: the body of ``external``: a finder made elsewhere checked and packed.
"""
