"""Stage ``stamps``: the stamp set on local disk, every row accounted for, and the decoded cache.

- ``staging``: copying a Phase 4c dataset from S3 or a directory, verified and resumable.
- ``real_hosts``: simulated arcs injected into real host cutouts (``stamps.source: hosts``).
- ``population_figure``: the injected population beside the LensPop forecast.
- ``stage``: the body of the stage.

The cache reader and stamp geometry the later stages use are library code in ``dhs.imaging``.
"""
