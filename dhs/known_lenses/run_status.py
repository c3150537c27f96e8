"""How the known-lens stages report that they could not do the whole job.

Run statuses (metrics key ``status``):

- ``ok``: every selected lens has a cutout, or a permanent, counted rejection (404, no data);
- ``partial``: some lenses lack a cutout for a transient reason (offline, timeouts, 5xx);
  recall covers the scored lenses only;
- ``offline``: the cutout service was unreachable and nothing is on disk; no recall;
- ``no_cutouts`` (scoring stage): reachable, but no lens has a usable cutout; no recall;
- ``not_scorable`` (scoring stage): the finder is a score table, which scores no cutouts; no recall.

Anything but ``ok`` is printed in a banner on stderr. ``known_lenses.require: true`` turns
"no cutout at all" into a ``RequireError`` (non-zero exit).
"""

from __future__ import annotations

from dhs.errors import StageError
from dhs.runner import banner  # noqa: F401 - the banner the known-lens stages print


class RequireError(StageError, RuntimeError):
    """known_lenses.require is true and the check could not run."""
