"""Known-lens recovery: does the lens finder find real, catalogued lenses in DR10?

- ``catalog``: the curated catalogue shipped as ``known_lenses.csv`` (SLACS/BELLS with theta_E,
  lenscat confident galaxy-scale lenses, graded DESI candidates), its build and its reader.
- the footprint, the cutout client and the FITS reader live in ``dhs.cutouts`` (shared with the
  stamps stage's real-host source).
- ``config``: the ``known_lenses`` params section, validated once for both stages.
- ``operating_points``: the score thresholds (FPR thresholds of the completeness stage) and the
  calibrated-probability map the recall is measured at.
- ``scoring``: the trained model's logits on the cutouts (training normalisation; torch only here).
- ``recall``: recall at a threshold with Wilson intervals, overall, by grade and by theta_E.
- ``run_status``: the run statuses, the loud banner and the ``require`` error.
- ``gallery``: a grz composite PNG of the cutouts with their scores.
"""
