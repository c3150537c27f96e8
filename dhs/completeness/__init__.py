"""Stages ``completeness@{arch}`` and ``sensitivity``: the selection function, counted in Spark.

- ``counts``: bins, criteria, and the (variable x bin x region) count table in Spark and in pandas.
- ``measure``: ``CompletenessConfig`` and one model's thresholds, completeness and headline numbers.
- ``sensitivity``: the Phase 4d proxy beside each model's completeness.
- ``figures``: curves with Wilson bars and bootstrap bands, the theta_E x PSF surface.
- ``spark``: the Spark session from params.
- ``stage``: the bodies of the two stages.
"""
