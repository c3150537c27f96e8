"""What every evaluation stage shares: the score table, thresholds on controls, intervals, AUC,
the PSF column rule, the theta_E regression summary and the calibration maths.

- ``scores``: the score table (one row per scored stamp) and the sigmoid that makes scores.
- ``thresholds``: thresholds at a target FPR on controls (pass: ``score > threshold``).
- ``intervals``: Wilson intervals and the region bootstrap.
- ``auc``: ROC AUC, its bootstrap interval, and the ROC curve drawn by the report.
- ``seeing``: the r-band PSF FWHM of a stamp (``psf_fwhm_used_r``, else ``psfsize_r``).
- ``regression``: bias and scatter of the theta_E head per theta_E/PSF bin.
- ``reliability``, ``fitting``, ``prevalence``, ``calibrator``: calibration (conventions in
  ``dhs.calibration``): reliability and ECE, temperature and isotonic fits, Bayes' rule to survey
  prevalence and purity, the fitted map and its file.
"""
