"""Stages ``completeness@{arch}`` and ``sensitivity``: the selection function, counted in Spark.

- ``sensitivity``: the Phase 4d proxy beside each model's completeness.
- ``stage``: the bodies of the two stages.

The measurement itself (count tables, weights, thresholds, figures) is library code in
``dhs.measurement``, which the selection stage uses too.
"""
