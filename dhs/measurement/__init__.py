"""Completeness measurement, shared by the completeness, sensitivity and selection stages.

- ``counts``: bins, criteria, and the (variable x bin x region) count table in Spark and in pandas.
- ``weighted``: importance-weighted (sky-weighted) completeness of measurement injections.
- ``measure``: ``CompletenessConfig`` and one model's thresholds, completeness and headline numbers.
- ``figures``: curves with Wilson bars and bootstrap bands, the theta_E x PSF surface.
- ``spark``: the Spark session from params.
"""
