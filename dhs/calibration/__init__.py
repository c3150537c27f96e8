"""Stage ``calibration@{arch}``. Calibration of lens-finder scores: reliability, ECE/MCE/Brier/log loss, temperature scaling,
isotonic regression, and the move from training prevalence to survey prevalence.

Conventions (every function below follows them):

- ``labels``: 1 = injection (lens), 0 = control. ``probs`` are P(label = 1) in [0, 1];
  ``logits`` are natural-log odds, probs = sigmoid(logits).
- Reliability bins: bin b holds probs in [e_b, e_b+1), the last bin is closed [e_B-1, e_B].
  ``uniform``: B equal-width bins on [0, 1]. ``quantile``: edges at the quantiles of the probs
  (equal counts up to ties; coinciding edges are merged, so ties can leave fewer than B bins).
- ECE = sum_b (n_b / N) |o_b - c_b| with o_b the observed fraction of label 1 in bin b and c_b
  the mean predicted probability there; MCE = max over non-empty bins of |o_b - c_b|.
- Brier = mean (p - y)^2. Log loss = -mean[y ln p + (1 - y) ln(1 - p)] with p clipped to
  [eps, 1 - eps], eps = 1e-15 (isotonic outputs can be exactly 0 or 1).
- Temperature scaling (Guo et al. 2017): p = sigmoid(z / T), one parameter T > 0 fitted by
  minimising the mean negative log-likelihood on the fit split over log T (bounded Brent search;
  the NLL is convex in 1/T, so the minimum is unique). T > 1 softens over-confident logits.
- Isotonic: a non-decreasing map from logit to probability fitted on the fit split
  (scikit-learn ``IsotonicRegression``), stored as knots, applied by linear interpolation and
  clamped outside the knots.
- Prevalence: a calibrated classifier outputs posteriors at the lens fraction ``pi_train`` of the
  set it was calibrated on. The likelihood ratio does not depend on prevalence, so by Bayes' rule
  at survey prevalence pi_s: logit_s = logit_train + log(pi_s/(1-pi_s)) - log(pi_train/(1-pi_train)).
- Purity of a threshold with rates (TPR, FPR) at prevalence pi:
  TPR pi / (TPR pi + FPR (1 - pi)). Thresholds come from ``dhs.evaluation.thresholds.threshold_at_fpr``
  (pass: score > threshold), exactly as in the completeness stage, so the numbers agree.

Modules: the maths is library code in ``dhs.evaluation``: ``reliability`` (input checks, reliability
curves, ECE/MCE/Brier/log loss), ``fitting`` (temperature scaling, isotonic), ``prevalence`` (Bayes'
rule, purity), ``calibrator`` (the fitted map and its file). Here: ``config`` (the params section),
``figures`` and ``stage`` (the body of the stage).

The calibrator of an arch is ``data/calibration/{arch}/calibrator.json``. This is "next to the
model": the train stage owns ``data/models/{arch}`` as a DVC output and DVC forbids overlapping
outputs, so the calibrator lives in its own directory and records the checkpoint (path and
SHA-256) it belongs to.
"""
