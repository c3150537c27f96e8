"""Stage `cutouts`: fetch a FITS cutout of every selected known lens into data/cutouts, once.

One stage for all archs (the cutouts depend on positions, size, layer and pixel scale, not on
the model), so the viewer is asked once and `known_lenses@{arch}` scores offline from disk.
data/cutouts is a persistent DVC output: a rerun (new catalogue rows, a resumed outage) keeps
what is there and requests only what is missing; `dvc push`/`dvc pull` carry it to machines
without internet.

Writes data/cutouts/<layer>_grz_<pixscale>as_<size>px/*.fits (valid cutouts only),
data/cutouts/manifest.csv (one row per selected lens: status, reason; permanent failures such
as a 404 are remembered there and not requested again: delete it to retry them) and
metrics/cutouts.json (status ok | partial | offline, counts by status and by reason).

Offline (the viewer unreachable and nothing cached) is not an error unless
known_lenses.require is true: the stage says so loudly, records `status: offline` and exits 0,
and known_lenses@{arch} then reports no recall.
"""

import sys

from dhs.known_lenses.catalog import CatalogError
from dhs.known_lenses.cutouts import CutoutError
from dhs.known_lenses.run_status import RequireError
from dhs.known_lenses.stage import run_cutouts
from dhs.runner import Option, Stage

STAGE = Stage("cutouts", run_cutouts, __doc__, errors=(CatalogError, CutoutError, RequireError), options=(
    Option("--out", "cutout_dir", "data/cutouts"), Option("--metrics", "metrics_path", "metrics/cutouts.json"),
    Option("--no-progress", "progress", action="store_false")))
main = STAGE.main

if __name__ == "__main__":
    sys.exit(main())
