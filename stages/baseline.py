"""Stage `baseline`: metadata-only models on the cached stamp metadata (no pixels).

leak:   observing conditions -> injection label; test AUC about 0.5 means injections and
        controls share conditions (docs/conventions.md, shortcuts). A WARNING is printed above
        leak_auc_warn.
proxy:  the seed's scalar baseline; injection parameters -> Phase 4d proxy "recovered"
        (arc_snr >= proxy_snr_min AND theta_E/PSF >= proxy_theta_psf_min), injections only.

Reads data/cache (train fits, val and test score) and writes metrics/baseline.json atomically.
"""

import sys

from dhs.baseline.models import BaselineError
from dhs.baseline.stage import run
from dhs.runner import Option, Stage
from dhs.stamps.cache import CacheError

STAGE = Stage("baseline", run, __doc__, errors=(BaselineError, CacheError), options=(
    Option("--cache", "cache_dir", "data/cache"), Option("--metrics", "metrics_path", "metrics/baseline.json")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
