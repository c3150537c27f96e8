"""The cutout client: Legacy Survey viewer FITS cutouts into an on-disk cache, politely.

Conventions:

- A request is ``CutoutSpec`` (layer ``ls-dr10``, bands ``grz``, 0.262 arcsec/px, the model's
  stamp size) at a position rounded to 1e-5 deg (0.036 arcsec, 0.14 px). The cache file is
  ``<cache_dir>/<layer>_<bands>_<pixscale>as_<size>px/<ra:09.5f><dec:+09.5f>.fits`` and the URL
  asks for exactly the rounded position, so a file holds what its name says.
- Only cutouts that pass ``read_cutout`` are cached (shape (3, S, S), finite, data in every
  band). A cached file is re-validated whenever it is used, and never fetched again.
- Retries: HTTP 5xx, 408, 429 (``Retry-After`` honoured up to ``max_backoff_s``), timeouts and
  connection errors are retried up to ``max_attempts`` with exponential backoff
  (``backoff_s * 2**(attempt-1)``, capped). A 404 or another 4xx, an invalid FITS answer and an
  unresolvable host are not retried.
- Offline: the first uncached position is requested alone. If the host cannot be resolved or
  connected to, nothing else is requested and every uncached row is ``skipped`` with reason
  ``offline``. During the parallel phase ``offline_after`` consecutive connection failures
  stop the run the same way (no retry storm against a dead host). Connect timeouts are short
  (``connect_timeout_s``), reads may be slow (``read_timeout_s``).
- Concurrency: at most ``max_concurrency`` requests in flight (a thread pool, one HTTP session
  per thread); the viewer is a shared public service, so the limit is capped at 8.
- Permanent failures (404, wrong shape, no data) are remembered in ``manifest.csv`` and not
  requested again by later runs from the same source (delete the manifest to retry them).
- Source: ``legacysurvey`` (the URL template) or a local directory of FITS cutouts, found as
  ``<dir>/<cache key path>``, ``<dir>/<cache file name>`` or ``<dir>/<name>.fits``; valid ones
  are copied into the cache so the scoring reads one place either way.

Per-row status: ``cached`` (already on disk), ``fetched``, ``local`` (copied from the local
directory), ``failed`` (with a reason) or ``skipped`` (``offline``). Run status: ``ok`` (every
row has a cutout or a permanent, counted rejection), ``partial`` (some rows missed for a
transient reason: network, server errors, offline with part of the set cached) or ``offline``
(unreachable and nothing usable on disk).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dhs import __version__, atomic
from dhs.known_lenses.cutout_fits import BANDS, CutoutInvalid, read_cutout
from dhs.known_lenses.footprint import valid_coordinates
from dhs.params.schema import CUTOUT_URL_TEMPLATE, MAX_CONCURRENCY_CAP

LEGACYSURVEY = "legacysurvey"
POSITION_DECIMALS = 5
USER_AGENT = f"dark-halo-scope/{__version__} (known-lens recovery; python-requests)"
USABLE = ("cached", "fetched", "local")
# reasons a later run may not repeat: the row is missing for now, not for good
TRANSIENT_REASONS = ("offline", "unresolvable", "connection_refused", "connect_timeout", "read_timeout", "connection_error",
                     "proxy_error", "http_408", "http_429", "http_500", "http_502", "http_503", "http_504", "http_5xx")


# failures where no connection to the service was made: the first request ending in one of these means offline
UNREACHABLE_REASONS = ("unresolvable", "connection_refused", "connect_timeout", "proxy_error")


class CutoutError(ValueError):
    """A configuration error (bad template, spec or source) that stops the run."""


@dataclass(frozen=True)
class CutoutSpec:
    size_px: int = 64
    pixscale_arcsec: float = 0.262
    layer: str = "ls-dr10"
    bands: str = BANDS

    def __post_init__(self):
        if not isinstance(self.size_px, int) or not 8 <= self.size_px <= 512:
            raise CutoutError(f"cutout size_px must be an integer in [8, 512], got {self.size_px!r}")
        if not 0.01 <= float(self.pixscale_arcsec) <= 10:
            raise CutoutError(f"cutout pixscale_arcsec must be in [0.01, 10] arcsec/px, got {self.pixscale_arcsec!r} "
                              f"(DR10 native is 0.262)")
        if not self.layer or any(c in self.layer for c in "/&?= "):
            raise CutoutError(f"cutout layer must be a viewer layer name such as ls-dr10, got {self.layer!r}")
        if self.bands != BANDS:
            raise CutoutError(f"cutout bands must be {BANDS!r} (the model's channels), got {self.bands!r}")

    @property
    def cache_subdir(self) -> str:
        return f"{self.layer}_{self.bands}_{self.pixscale_arcsec:.3f}as_{self.size_px}px"


@dataclass(frozen=True)
class FetchConfig:
    url_template: str = CUTOUT_URL_TEMPLATE
    max_concurrency: int = 4
    max_attempts: int = 4
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    offline_after: int = 3

    def __post_init__(self):
        missing = [k for k in ("{ra}", "{dec}") if k not in self.url_template]
        if missing or not self.url_template.startswith(("http://", "https://")):
            raise CutoutError(f"url_template must be an http(s) URL with {{ra}} and {{dec}} (and {{layer}}, {{pixscale}}, "
                              f"{{size}}, {{bands}}) placeholders, got {self.url_template!r}")
        if not 1 <= self.max_concurrency <= MAX_CONCURRENCY_CAP:
            raise CutoutError(f"max_concurrency must be in [1, {MAX_CONCURRENCY_CAP}] (the viewer is a shared public "
                              f"service), got {self.max_concurrency}")
        if self.max_attempts < 1:
            raise CutoutError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise CutoutError("connect_timeout_s and read_timeout_s must be > 0 seconds")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.offline_after < 1:
            raise CutoutError("backoff_s and max_backoff_s must be >= 0 and offline_after >= 1")


def rounded(ra_deg: float, dec_deg: float) -> tuple[float, float]:
    return round(float(ra_deg), POSITION_DECIMALS) % 360.0, round(float(dec_deg), POSITION_DECIMALS)


def cache_relpath(ra_deg: float, dec_deg: float, spec: CutoutSpec) -> str:
    """Cache path of a position, relative to the cache directory."""
    ra, dec = rounded(ra_deg, dec_deg)
    return f"{spec.cache_subdir}/{ra:09.5f}{dec:+09.5f}.fits"


def cutout_url(template: str, ra_deg: float, dec_deg: float, spec: CutoutSpec) -> str:
    ra, dec = rounded(ra_deg, dec_deg)
    return template.format(ra=f"{ra:.5f}", dec=f"{dec:.5f}", layer=spec.layer, pixscale=f"{spec.pixscale_arcsec:g}",
                           size=spec.size_px, bands=spec.bands)


@dataclass
class Outcome:
    status: str                  # cached | fetched | local | failed | skipped
    reason: str = ""
    attempts: int = 0
    message: str = ""
    backoff_s: float = 0.0       # seconds of backoff asked for between attempts (the schedule, not a clock reading)


@dataclass
class FetchResult:
    rows: pd.DataFrame           # per input row: name, ra_deg, dec_deg, key, status, reason, attempts, message, backoff_s
    status: str                  # ok | partial | offline
    offline: bool                # the service could not be reached
    requests: int                # HTTP requests sent
    elapsed_s: float
    source: str
    messages: list[str] = field(default_factory=list)

    @property
    def n_usable(self) -> int:
        return int(self.rows["status"].isin(USABLE).sum())

    def counts(self) -> dict:
        failed = self.rows[~self.rows["status"].isin(USABLE)]
        return {"rows": len(self.rows), "usable": self.n_usable,
                "by_status": {k: int(v) for k, v in sorted(Counter(self.rows["status"]).items())},
                "not_usable_by_reason": {k: int(v) for k, v in sorted(Counter(failed["reason"]).items())},
                "requests": self.requests}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (requests -> urllib3 MaxRetryError.reason -> socket errors)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *[a for a in e.args if isinstance(a, BaseException)]])


def classify_exception(exc: BaseException) -> tuple[str, bool, bool]:
    """(reason, retry, unreachable) for a request that raised: ``unreachable`` means no
    connection to the service was made, which is what counts towards going offline."""
    import requests
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    chain = list(_causes(exc))
    if any(isinstance(e, (NameResolutionError, socket.gaierror)) for e in chain):
        return "unresolvable", False, True
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy_error", True, True
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect_timeout", True, True
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read_timeout", True, False
    if any(isinstance(e, (NewConnectionError, ConnectionRefusedError)) for e in chain):
        return "connection_refused", True, True
    return "connection_error", True, False


def describe_exception(exc: BaseException) -> str:
    """The most specific message in the chain (urllib3's "Failed to resolve 'host' ..." rather
    than requests' "Max retries exceeded ..."), shortened to 300 characters."""
    from urllib3.exceptions import MaxRetryError

    inner = [e for e in _causes(exc) if type(e).__module__.startswith(("urllib3", "socket", "builtins"))
             and not isinstance(e, MaxRetryError)]
    e = inner[0] if inner else exc
    return f"{type(e).__name__}: {e}"[:300]


def _http_reason(code: int) -> tuple[str, bool]:
    """(reason, retry) for a non-200 HTTP status."""
    if code in (408, 429) or 500 <= code < 600:
        return (f"http_{code}" if code in (408, 429, 500, 502, 503, 504) else "http_5xx"), True
    return f"http_{code}", False


@dataclass
class _Attempt:
    outcome: Outcome
    retry: bool = False
    unreachable: bool = False
    wait_s: float = 0.0


class _Client:
    """Requests with retries, a per-thread HTTP session and a shared offline breaker."""

    def __init__(self, cfg: FetchConfig, spec: CutoutSpec, cache_dir: Path):
        self.cfg, self.spec, self.cache_dir = cfg, spec, cache_dir
        self._local = threading.local()
        self._lock = threading.Lock()
        self.requests = 0
        self._consecutive_unreachable = 0
        self.offline = threading.Event()

    def _session(self):
        import requests

        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers["User-Agent"] = USER_AGENT
        return s

    def _note(self, unreachable: bool) -> None:
        with self._lock:
            self._consecutive_unreachable = self._consecutive_unreachable + 1 if unreachable else 0
            if self._consecutive_unreachable >= self.cfg.offline_after:
                self.offline.set()

    def _once(self, url: str, key: str) -> _Attempt:
        import requests

        with self._lock:
            self.requests += 1
        try:
            resp = self._session().get(url, timeout=(self.cfg.connect_timeout_s, self.cfg.read_timeout_s))
            body, code, retry_after = resp.content, resp.status_code, resp.headers.get("Retry-After", "")
        except requests.exceptions.RequestException as exc:
            reason, retry, unreachable = classify_exception(exc)
            if reason == "unresolvable":
                self.offline.set()  # a name that does not resolve will not resolve on the next try
            return _Attempt(Outcome("failed", reason, message=describe_exception(exc)), retry, unreachable)
        if code != 200:
            reason, retry = _http_reason(code)
            wait = min(float(retry_after), self.cfg.max_backoff_s) if retry_after.strip().isdigit() else 0.0
            return _Attempt(Outcome("failed", reason, message=f"HTTP {code} for {url}"), retry, False, wait)
        try:
            read_cutout(body, self.spec.size_px, where=url)
        except CutoutInvalid as exc:
            return _Attempt(Outcome("failed", exc.reason, message=str(exc)))
        atomic.write_bytes(self.cache_dir / key, body)
        return _Attempt(Outcome("fetched"))

    def fetch(self, key: str, ra_deg: float, dec_deg: float) -> Outcome:
        """Fetch one position into the cache under ``key``, retrying transient failures."""
        url = cutout_url(self.cfg.url_template, ra_deg, dec_deg, self.spec)
        waited = 0.0
        for attempt in range(1, self.cfg.max_attempts + 1):
            if attempt == 1 and self.offline.is_set():
                return Outcome("skipped", "offline", 0, "not requested: the cutout service is unreachable")
            a = self._once(url, key)
            self._note(a.unreachable)
            a.outcome.attempts, a.outcome.backoff_s = attempt, waited
            if not a.retry:
                return a.outcome
            if attempt == self.cfg.max_attempts or self.offline.is_set():
                a.outcome.message = f"gave up after {attempt} attempt(s); last: {a.outcome.message}"
                return a.outcome
            backoff = max(min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.max_backoff_s), a.wait_s)
            waited += backoff
            a.outcome.backoff_s = waited
            if self.offline.wait(backoff):  # wakes at once when the run goes offline
                a.outcome.message = f"gave up after {attempt} attempt(s), the service is unreachable; last: {a.outcome.message}"
                return a.outcome
        raise AssertionError("unreachable")


def _local_candidates(local_dir: Path, key: str, name: str) -> list[Path]:
    return [local_dir / key, local_dir / Path(key).name, local_dir / f"{name}.fits"]


def fetch_cutouts(positions: pd.DataFrame, cache_dir: str | Path, spec: CutoutSpec, source: str = LEGACYSURVEY,
                  cfg: FetchConfig | None = None, progress: bool = True,
                  remembered: Mapping[str, tuple[str, str]] | None = None) -> FetchResult:
    """Bring a valid cutout of every row of ``positions`` (columns ``ra_deg``, ``dec_deg`` and
    optionally ``name``) into ``cache_dir``; see the module docstring for statuses and reasons.

    ``source`` is ``legacysurvey`` (use ``cfg.url_template``) or a local directory of FITS files.
    Rows sharing a rounded position share one request and one file. ``remembered`` maps cache
    keys to (reason, message) of permanent failures of an earlier run (``remembered_failures``):
    those are reported again without a request, so a rerun neither hammers the service for known
    404s nor turns them into "offline" on a machine without network."""
    cfg = cfg or FetchConfig()
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir)
    missing_cols = [c for c in ("ra_deg", "dec_deg") if c not in positions.columns]
    if missing_cols:
        raise CutoutError(f"positions lack column(s) {missing_cols}")
    names = positions["name"].astype(str).to_numpy() if "name" in positions.columns else np.array([""] * len(positions))
    ra = positions["ra_deg"].to_numpy(np.float64)
    dec = positions["dec_deg"].to_numpy(np.float64)
    bad = ~valid_coordinates(ra, dec)
    if bad.any():
        raise CutoutError(f"{int(bad.sum())} position(s) with bad coordinates (need RA in [0, 360), Dec in [-90, 90]), "
                          f"e.g. rows {np.flatnonzero(bad)[:5].tolist()}; curate the catalogue first")
    keys = [cache_relpath(r, d, spec) for r, d in zip(ra, dec)]
    outcomes: dict[str, Outcome] = {}
    first_row: dict[str, int] = {}
    for i, k in enumerate(keys):
        first_row.setdefault(k, i)
    messages: list[str] = []
    cache_invalid = 0
    for k in first_row:
        path = cache_dir / k
        if path.is_file():
            try:
                read_cutout(path, spec.size_px, str(path))
                outcomes[k] = Outcome("cached")
            except CutoutInvalid:
                cache_invalid += 1
                path.unlink()
    if cache_invalid:
        messages.append(f"{cache_invalid} cached cutout(s) failed validation and were removed; fetching them again")
    for k, (reason, message) in (remembered or {}).items():
        if k in first_row and k not in outcomes and reason and reason not in TRANSIENT_REASONS:
            outcomes[k] = Outcome("failed", reason, 0, message)
    todo = [k for k in first_row if k not in outcomes]
    client = None
    if source != LEGACYSURVEY:
        local_dir = Path(source)
        if not local_dir.is_dir():
            raise CutoutError(f"cutout source {source!r} is neither '{LEGACYSURVEY}' nor an existing directory of FITS cutouts")
        for k in tqdm(todo, desc="cutouts (local)", unit="cutout", disable=not progress):
            found = next((p for p in _local_candidates(local_dir, k, names[first_row[k]]) if p.is_file()), None)
            if found is None:
                outcomes[k] = Outcome("failed", "not_in_local_dir", message=f"no {Path(k).name} or {names[first_row[k]]}.fits in {local_dir}")
                continue
            try:
                read_cutout(found, spec.size_px, str(found))
            except CutoutInvalid as exc:
                outcomes[k] = Outcome("failed", exc.reason, message=str(exc))
                continue
            atomic.write_bytes(cache_dir / k, found.read_bytes())
            outcomes[k] = Outcome("local")
    elif todo:
        client = _Client(cfg, spec, cache_dir)
        pos = {k: (ra[first_row[k]], dec[first_row[k]]) for k in todo}
        with tqdm(total=len(todo), desc="cutouts (legacysurvey)", unit="cutout", disable=not progress) as bar:
            # the first request goes alone: an unreachable service is found with one request, not len(todo)
            outcomes[todo[0]] = client.fetch(todo[0], *pos[todo[0]])
            bar.update(1)
            if outcomes[todo[0]].reason in UNREACHABLE_REASONS:
                client.offline.set()
            rest = todo[1:]
            if client.offline.is_set():
                for k in rest:
                    outcomes[k] = Outcome("skipped", "offline", 0, "not requested: the cutout service is unreachable")
                bar.update(len(rest))
            elif rest:
                with ThreadPoolExecutor(max_workers=cfg.max_concurrency, thread_name_prefix="cutout") as pool:
                    futures = {pool.submit(client.fetch, k, *pos[k]): k for k in rest}
                    for fut in as_completed(futures):
                        outcomes[futures[fut]] = fut.result()
                        bar.update(1)
    rows = pd.DataFrame({"name": names, "ra_deg": ra, "dec_deg": dec, "key": keys})
    rows["status"] = [outcomes[k].status for k in keys]
    rows["reason"] = [outcomes[k].reason for k in keys]
    rows["attempts"] = [outcomes[k].attempts for k in keys]
    rows["message"] = [outcomes[k].message for k in keys]
    rows["backoff_s"] = [outcomes[k].backoff_s for k in keys]
    offline = bool(client is not None and client.offline.is_set())
    usable = rows["status"].isin(USABLE)
    transient = ~usable & rows["reason"].isin(TRANSIENT_REASONS)
    if offline and not usable.any():
        status = "offline"
    elif transient.any():
        status = "partial"
    else:
        status = "ok"
    if offline:
        first = outcomes[todo[0]]
        messages.append(f"cutout service unreachable ({first.reason}): {first.message}")
        messages.append(f"{int((rows['reason'] == 'offline').sum())} row(s) not requested")
    return FetchResult(rows, status, offline, client.requests if client else 0, time.perf_counter() - t0,
                       source, messages)


@dataclass
class LoadedCutouts:
    images_nmgy: np.ndarray      # (M, 3, S, S) float32, the usable rows in input order
    usable: np.ndarray           # (N,) bool: which input rows have a valid cutout
    reason: np.ndarray           # (N,) str: "" for usable rows, else why not
    keys: list[str]


def load_cutouts(positions: pd.DataFrame, cache_dir: str | Path, spec: CutoutSpec) -> LoadedCutouts:
    """The cached cutouts of ``positions`` (no network): each file re-validated; a missing file
    is reason ``missing``, an invalid one its ``CutoutInvalid`` reason."""
    cache_dir = Path(cache_dir)
    n = len(positions)
    keys = [cache_relpath(r, d, spec) for r, d in zip(positions["ra_deg"].to_numpy(np.float64), positions["dec_deg"].to_numpy(np.float64))]
    usable = np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    images = []
    for i, k in enumerate(keys):
        path = cache_dir / k
        if not path.is_file():
            reason[i] = "missing"
            continue
        try:
            images.append(read_cutout(path, spec.size_px, str(path)))
            usable[i] = True
        except CutoutInvalid as exc:
            reason[i] = exc.reason
    cube = np.stack(images) if images else np.zeros((0, 3, spec.size_px, spec.size_px), np.float32)
    return LoadedCutouts(cube, usable, reason, keys)



MANIFEST_NAME = "manifest.csv"


def write_manifest(result: FetchResult, grades, cache_dir: str | Path) -> pd.DataFrame:
    """``<cache_dir>/manifest.csv``, one row per lens: name, position, grade, cache key, source,
    status (``ok`` | ``failed`` | ``skipped``), reason and message. Written atomically.

    It records what is on disk, not when it arrived: a cutout fetched now and one found cached
    later are both ``ok``, so rerunning the stage over a complete cache leaves the manifest (and
    the DVC hash of the cutout directory) unchanged and nothing downstream reruns."""

    rows = result.rows
    usable = rows["status"].isin(USABLE)
    manifest = pd.DataFrame({"name": rows["name"], "ra_deg": rows["ra_deg"], "dec_deg": rows["dec_deg"],
                             "grade": np.asarray(grades), "key": rows["key"], "source": result.source,
                             "status": np.where(usable, "ok", rows["status"]), "reason": rows["reason"],
                             "message": np.where(usable, "", rows["message"])})
    atomic.write_text(Path(cache_dir) / MANIFEST_NAME, manifest.to_csv(index=False, lineterminator="\n"))
    return manifest


def remembered_failures(manifest: pd.DataFrame | None, source: str) -> dict[str, tuple[str, str]]:
    """Cache key -> (reason, message) of the permanent failures (404, bad shape, no data, ...) a
    manifest of the same ``source`` recorded. Delete the manifest to ask for them again."""
    if manifest is None or "source" not in manifest.columns:
        return {}
    m = manifest[(manifest["source"] == source) & (manifest["status"] == "failed") & ~manifest["reason"].isin(TRANSIENT_REASONS)
                 & (manifest["reason"] != "")]
    return {k: (r, msg) for k, r, msg in zip(m["key"], m["reason"], m["message"])}


def read_manifest(cache_dir: str | Path) -> pd.DataFrame | None:
    """The manifest the cutouts stage left in ``cache_dir``; None when there is none."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    m = pd.read_csv(path, dtype={"key": str, "source": str, "status": str, "reason": str, "message": str, "name": str},
                    keep_default_na=False)
    missing = [c for c in ("key", "status", "reason") if c not in m.columns]
    if missing:
        raise CutoutError(f"{path} lacks column(s) {missing}; rerun `dvc repro cutouts`")
    return m
