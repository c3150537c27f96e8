"""Known-lens recovery: does the lens finder find real, catalogued lenses in DR10?

- ``footprint``: which sky positions the DR10 South (DECam, ``ls-dr10``) imaging covers.
- ``catalog``: the curated catalogue shipped as ``known_lenses.csv`` (SLACS/BELLS with theta_E,
  lenscat confident galaxy-scale lenses, graded DESI candidates), its build and its reader.
- ``cutout_fits``: reading and validating a Legacy Survey FITS cutout (3 x S x S, nMgy).
- ``cutouts``: the cutout client (URL, on-disk cache, retries, concurrency, offline detection,
  the manifest of what is on disk).
- ``config``: the ``known_lenses`` params section, validated once for both stages.
- ``operating_points``: the score thresholds (FPR thresholds of the completeness stage) and the
  calibrated-probability map the recall is measured at.
- ``scoring``: the trained model's logits on the cutouts (training normalisation; torch only here).
- ``recall``: recall at a threshold with Wilson intervals, overall, by grade and by theta_E.
- ``run_status``: the run statuses, the loud banner and the ``require`` error.
- ``gallery``: a grz composite PNG of the cutouts with their scores.
"""
