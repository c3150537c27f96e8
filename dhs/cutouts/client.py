"""The cutout client: Legacy Survey viewer FITS cutouts into an on-disk cache, politely.

Conventions:

- A request is ``CutoutSpec`` (layer ``ls-dr10``, bands ``grz``, 0.262 arcsec/px, the model's
  stamp size) at a position rounded to 1e-5 deg (0.036 arcsec, 0.14 px). The cache file is
  ``<cache_dir>/<layer>_<bands>_<pixscale>as_<size>px/<ra:09.5f><dec:+09.5f>.fits`` and the URL
  asks for exactly the rounded position, so a file holds what its name says.
- Only cutouts that pass ``read_cutout`` are cached (shape (3, S, S), finite, data in every
  band). A cached file is re-validated whenever it is used, and never fetched again.
- Deadlines: every cutout has ``cutout_deadline_s`` for all its attempts and backoffs, and the
  run has ``run_deadline_s``. They bound the wall time, not each socket read: a server that
  sends its headers at once and then drips the body, every read within ``read_timeout_s``, is
  cut off at the deadline (a watchdog shuts the connection's socket down). A row cut off is
  ``cutout_deadline``; rows the run no longer reaches are ``skipped`` with ``run_deadline``.
- Failures are classed by what a retry could change. Transient (retried within the run, up to
  ``max_attempts`` with exponential backoff ``backoff_s * 2**(attempt-1)``, capped; never
  remembered): HTTP 5xx, 408, 429 (``Retry-After`` honoured up to ``max_backoff_s``), timeouts,
  dropped or refused connections, and an HTTP 200 whose body is not a FITS cutout (an HTML
  error page, garbage, a truncated file: ``bad_response``). Other 4xx (401, 403, ...) are not
  retried now but not remembered either (access may come back). Permanent (remembered): 400,
  404, 410, 414, and a well-formed FITS answer whose content is unusable (``bad_shape``,
  ``nonfinite_pixels``, ``no_coverage``): the same request gives the same answer.
- Memory: permanent failures are remembered in ``manifest.csv`` with the URL that got them,
  and not requested again by later runs that would ask the same URL. Another
  ``url_template``, layer, size or position asks again; so does deleting the manifest.
  A local directory source is looked at every run (nothing is remembered) and is the authority:
  its current file replaces a cached copy that differs, and a cutout no longer there is not served
  from the cache.
- Offline: the first uncached position is requested alone. If the host cannot be resolved or
  connected to, nothing else is requested and every uncached row is ``skipped`` with reason
  ``offline``. During the parallel phase ``offline_after`` consecutive connection failures
  stop the run the same way (no retry storm against a dead host). Connect timeouts are short
  (``connect_timeout_s``), reads may be slow (``read_timeout_s``).
- Concurrency: at most ``max_concurrency`` requests in flight (a thread pool, one HTTP session
  per thread); the viewer is a shared public service, so the limit is capped at 8.
- Source: ``legacysurvey`` (the URL template; messages name its host) or a local directory of
  FITS cutouts, found as ``<dir>/<cache key path>``, ``<dir>/<cache file name>`` or
  ``<dir>/<name>.fits``; valid ones are copied into the cache so the scoring reads one place
  either way.

Per-row status: ``cached`` (already on disk), ``fetched``, ``local`` (copied from the local
directory), ``failed`` (with a reason) or ``skipped`` (``offline``, ``run_deadline``). Run
status: ``ok`` (every row has a cutout or a permanent, counted rejection), ``partial`` (some
rows missed for a transient reason: network, server errors, bad responses, deadlines, offline
with part of the set cached) or ``offline`` (unreachable and nothing usable on disk).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dhs import __version__, atomic
from dhs.cutouts.fits import BANDS, CutoutInvalid, read_cutout
from dhs.cutouts.footprint import valid_coordinates
from dhs.errors import StageError
from dhs.params.schema import MAX_CONCURRENCY_CAP
from dhs.params.views import view

LEGACYSURVEY = "legacysurvey"
POSITION_DECIMALS = 5
USER_AGENT = f"dark-halo-scope/{__version__} (known-lens recovery; python-requests)"
USABLE = ("cached", "fetched", "local")
# the same request gives the same answer: remembered (with its URL) and not asked again
PERMANENT_REASONS = ("http_400", "http_404", "http_410", "http_414", "bad_shape", "nonfinite_pixels", "no_coverage", "bad_bands",
                     "too_large", "redirect_offsite", "redirect_loop")
# the cutout service may redirect on its own host (http -> https, a moved path); never elsewhere
REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 3
# a local directory's verdicts: counted, final for this run, looked at again by the next
LOCAL_REASONS = ("not_in_local_dir", "not_fits")
# reasons a later run may not repeat: the row is missing for now, not for good (any HTTP reason
# not in PERMANENT_REASONS is transient too: is_transient)
TRANSIENT_REASONS = ("offline", "unresolvable", "connection_refused", "connect_timeout", "read_timeout", "connection_error",
                     "proxy_error", "http_401", "http_403", "http_408", "http_429", "http_500", "http_502", "http_503",
                     "http_504", "http_5xx", "bad_response", "cutout_deadline", "run_deadline")


def is_transient(reason: str) -> bool:
    """Whether a row without a cutout for ``reason`` might get one from a later run."""
    return bool(reason) and reason not in PERMANENT_REASONS and reason not in LOCAL_REASONS and reason != "missing"


# failures where no connection to the service was made: the first request ending in one of these means offline
UNREACHABLE_REASONS = ("unresolvable", "connection_refused", "connect_timeout", "proxy_error")


class CutoutError(StageError, ValueError):
    """A configuration error (bad template, spec or source) that stops the run."""


@dataclass(frozen=True)
class CutoutSpec:
    size_px: int = 64
    pixscale_arcsec: float = 0.262
    layer: str = "ls-dr10"
    bands: str = BANDS
    max_nonfinite_frac: float = 0.0   # NaN/Inf pixels a cutout may hold (as no data); known lenses: none

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
        if not 0.0 <= float(self.max_nonfinite_frac) <= 0.5:
            raise CutoutError(f"cutout max_nonfinite_frac must be in [0, 0.5], got {self.max_nonfinite_frac!r}")

    @property
    def cache_subdir(self) -> str:
        return f"{self.layer}_{self.bands}_{self.pixscale_arcsec:.3f}as_{self.size_px}px"


@dataclass(frozen=True)
class FetchConfig:
    """A view of the fetch keys of the ``known_lenses`` section of params.yaml (each key, its
    default and its check in dhs.params.schema); ``stamps.hosts`` fetches with it too
    (``dhs.stamps.real_hosts``)."""
    SECTION: ClassVar[str] = "known_lenses"
    url_template: str
    max_concurrency: int
    max_attempts: int
    connect_timeout_s: float
    read_timeout_s: float
    backoff_s: float
    cutout_deadline_s: float             # wall time for one cutout: every attempt and backoff
    run_deadline_s: float                # wall time for the whole run
    # not keys of params: the client's own limits (a test may shorten them)
    max_backoff_s: float = 30.0          # the cap on one backoff, Retry-After included
    offline_after: int = 3               # consecutive unreachable requests that make the run offline
    max_body_bytes: int = 64 << 20       # a larger answer is not a cutout

    @classmethod
    def from_params(cls, p: Mapping[str, Any] | None, source: str = "params.yaml", **limits: Any) -> "FetchConfig":
        """From the ``known_lenses`` section; ``limits``: the fields that are not keys of params."""
        return view(cls, p, source, **limits)

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
        if not (self.cutout_deadline_s > 0 and self.run_deadline_s > 0):
            raise CutoutError("cutout_deadline_s and run_deadline_s must be > 0 seconds")

    @property
    def host(self) -> str:
        """The host the template talks to (what messages name), without any user info."""
        from urllib.parse import urlsplit

        u = urlsplit(self.url_template)
        try:
            port = u.port
        except ValueError:
            port = None
        return (u.hostname or "?") + (f":{port}" if port else "")


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
    """(reason, retry now) for a non-200 HTTP status."""
    if code in (408, 429) or 500 <= code < 600:
        return (f"http_{code}" if code in (408, 429, 500, 502, 503, 504) else "http_5xx"), True
    return f"http_{code}", False


@dataclass
class _Attempt:
    outcome: Outcome
    retry: bool = False
    unreachable: bool = False
    wait_s: float = 0.0


# --------------------------------------------------------------------------- deadlines
# requests bounds each socket read (read_timeout_s), not a response: a server that drips a byte
# at a time never times out. A watchdog timer per attempt shuts the socket of the connection
# the attempt uses down at the deadline, which ends whatever read is blocked on it.

_current = threading.local()  # per thread: the _Watch of the attempt in progress


class _Watch:
    """One attempt's deadline: ``fire`` (the timer thread) shuts down the socket the request
    ``attach``ed; ``done`` (the attempt's thread) disarms it."""

    def __init__(self, reason: str):
        self.reason = reason  # cutout_deadline | run_deadline: which deadline this is
        self._lock = threading.Lock()
        self._sock = None
        self._armed = True
        self.fired = False

    def attach(self, sock) -> None:
        if sock is None:
            return
        with self._lock:
            self._sock = sock
            cut = self.fired and self._armed
        if cut:
            _shutdown(sock)

    def fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            sock = self._sock
        if sock is not None:
            _shutdown(sock)

    def done(self) -> None:
        with self._lock:
            self._armed = False


def _shutdown(sock) -> None:
    # the plain socket's shutdown: safe under TLS from another thread, and it works while the
    # response still reads from the socket after http.client has dropped the connection's reference
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched_session():
    """A requests session whose connections hand the current attempt's watch their socket."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def attach(conn) -> None:
        w = getattr(_current, "watch", None)
        if w is not None:
            w.attach(getattr(conn, "sock", None))

    class Conn(HTTPConnection):
        def connect(self):
            super().connect()
            attach(self)

        def request(self, *a, **kw):
            attach(self)  # a kept-alive connection: already connected
            return super().request(*a, **kw)

    class TLSConn(HTTPSConnection):
        def connect(self):
            super().connect()
            attach(self)

        def request(self, *a, **kw):
            attach(self)
            return super().request(*a, **kw)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TLSPool(HTTPSConnectionPool):
        ConnectionCls = TLSConn

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *a, **kw):
            super().init_poolmanager(*a, **kw)
            self.poolmanager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}

        def proxy_manager_for(self, *a, **kw):  # through an HTTP(S) proxy too
            manager = super().proxy_manager_for(*a, **kw)
            if type(manager).__name__ == "ProxyManager":
                manager.pool_classes_by_scheme = {"http": Pool, "https": TLSPool}
            return manager

    s = requests.Session()
    for prefix in ("http://", "https://"):
        s.mount(prefix, Adapter())
    s.headers["User-Agent"] = USER_AGENT
    s.headers["Accept-Encoding"] = "identity"  # FITS pixels barely compress; one read is one bounded recv
    return s


class _Client:
    """Requests with retries and deadlines, a per-thread HTTP session and a shared offline breaker."""

    def __init__(self, cfg: FetchConfig, spec: CutoutSpec, cache_dir: Path, run_deadline: float | None = None):
        self.cfg, self.spec, self.cache_dir = cfg, spec, cache_dir
        self.run_deadline = run_deadline if run_deadline is not None else time.monotonic() + cfg.run_deadline_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self.requests = 0
        self._consecutive_unreachable = 0
        self.offline = threading.Event()
        self.run_over = threading.Event()   # the run deadline has passed: nothing new is requested

    def _session(self):
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = _watched_session()
        return s

    def _note(self, unreachable: bool) -> None:
        with self._lock:
            self._consecutive_unreachable = self._consecutive_unreachable + 1 if unreachable else 0
            if self._consecutive_unreachable >= self.cfg.offline_after:
                self.offline.set()

    def _deadline(self, cutout_deadline: float) -> tuple[float, str]:
        return (cutout_deadline, "cutout_deadline") if cutout_deadline <= self.run_deadline else (self.run_deadline, "run_deadline")

    def _deadline_outcome(self, reason: str, attempt: int, last: str = "") -> Outcome:
        if reason == "run_deadline":
            self.run_over.set()
            what = f"the run reached known_lenses.run_deadline_s={self.cfg.run_deadline_s:g} s"
        else:
            what = f"the cutout took its known_lenses.cutout_deadline_s={self.cfg.cutout_deadline_s:g} s"
        return Outcome("failed", reason, attempt, f"cut off: {what}" + (f"; last: {last}" if last else ""))

    def _once(self, url: str, key: str, deadline: float, why: str) -> _Attempt:
        import http.client

        import requests
        import urllib3

        with self._lock:
            self.requests += 1
        watch = _Watch(why)
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), watch.fire)
        timer.daemon = True
        _current.watch = watch
        timer.start()
        try:
            # redirects followed by hand: on the same host only, at most MAX_REDIRECTS, each one counted
            target, session = url, self._session()
            for hop in range(MAX_REDIRECTS + 1):
                resp = session.get(target, timeout=(self.cfg.connect_timeout_s, self.cfg.read_timeout_s), stream=True,
                                   allow_redirects=False)
                if resp.status_code not in REDIRECT_CODES:
                    break
                nxt = urljoin(target, resp.headers.get("Location", ""))
                resp.close()
                if urlsplit(nxt).netloc != urlsplit(url).netloc or urlsplit(nxt).scheme not in ("http", "https"):
                    return _Attempt(Outcome("failed", "redirect_offsite", message=f"HTTP {resp.status_code} for {target} "
                                                                                  f"points to {urlsplit(nxt).netloc or nxt!r}, another "
                                                                                  f"host: not followed"))
                if hop == MAX_REDIRECTS:
                    return _Attempt(Outcome("failed", "redirect_loop", message=f"more than {MAX_REDIRECTS} redirects from {url}"))
                with self._lock:
                    self.requests += 1
                target = nxt
            try:
                code, retry_after = resp.status_code, resp.headers.get("Retry-After", "")
                ctype = resp.headers.get("Content-Type", "")
                chunks, n = [], 0
                for chunk in resp.iter_content(64 << 10):
                    chunks.append(chunk)
                    n += len(chunk)
                    if n > self.cfg.max_body_bytes:
                        break
                body = b"".join(chunks)
            finally:
                resp.close()
        except (requests.exceptions.RequestException, OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
            if watch.fired:
                return _Attempt(self._deadline_outcome(why, 0, describe_exception(exc)))
            reason, retry, unreachable = classify_exception(exc)
            if reason == "unresolvable":
                self.offline.set()  # a name that does not resolve will not resolve on the next try
            return _Attempt(Outcome("failed", reason, message=describe_exception(exc)), retry, unreachable)
        finally:
            watch.done()
            timer.cancel()
            _current.watch = None
        if watch.fired:  # the body ended because the socket was cut: not an answer
            return _Attempt(self._deadline_outcome(why, 0))
        if code != 200:
            reason, retry = _http_reason(code)
            wait = min(float(retry_after), self.cfg.max_backoff_s) if retry_after.strip().isdigit() else 0.0
            return _Attempt(Outcome("failed", reason, message=f"HTTP {code} for {url}"), retry, False, wait)
        if n > self.cfg.max_body_bytes:
            return _Attempt(Outcome("failed", "bad_response", message=f"HTTP 200 for {url} with more than "
                                                                     f"{self.cfg.max_body_bytes} bytes: not a cutout"), True)
        if ctype.split(";")[0].strip().lower() in ("text/html", "text/plain", "application/json"):
            return _Attempt(Outcome("failed", "bad_response", message=f"HTTP 200 for {url} is {ctype!r} ({len(body)} bytes), "
                                                                     f"not a FITS cutout: an error page?"), True)
        try:
            read_cutout(body, self.spec.size_px, where=url, max_nonfinite_frac=self.spec.max_nonfinite_frac)
        except CutoutInvalid as exc:
            if exc.reason == "not_fits":  # garbage, a truncated file: the next answer may be whole
                return _Attempt(Outcome("failed", "bad_response", message=f"HTTP 200 but {exc}"), True)
            return _Attempt(Outcome("failed", exc.reason, message=str(exc)))
        atomic.write_bytes(self.cache_dir / key, body)
        return _Attempt(Outcome("fetched"))

    def fetch(self, key: str, ra_deg: float, dec_deg: float) -> Outcome:
        """Fetch one position into the cache under ``key``, retrying transient failures within
        the cutout's and the run's deadlines."""
        url = cutout_url(self.cfg.url_template, ra_deg, dec_deg, self.spec)
        if self.run_over.is_set() or time.monotonic() >= self.run_deadline:
            self.run_over.set()
            return Outcome("skipped", "run_deadline", 0, f"not requested: the run reached known_lenses.run_deadline_s="
                                                         f"{self.cfg.run_deadline_s:g} s")
        deadline, why = self._deadline(time.monotonic() + self.cfg.cutout_deadline_s)
        waited = 0.0
        for attempt in range(1, self.cfg.max_attempts + 1):
            if attempt == 1 and self.offline.is_set():
                return Outcome("skipped", "offline", 0, "not requested: the cutout service is unreachable")
            a = self._once(url, key, deadline, why)
            self._note(a.unreachable)
            a.outcome.attempts, a.outcome.backoff_s = attempt, waited
            if not a.retry:
                return a.outcome
            if attempt == self.cfg.max_attempts or self.offline.is_set():
                a.outcome.message = f"gave up after {attempt} attempt(s); last: {a.outcome.message}"
                return a.outcome
            backoff = max(min(self.cfg.backoff_s * 2 ** (attempt - 1), self.cfg.max_backoff_s), a.wait_s)
            if time.monotonic() + backoff >= deadline:  # the next attempt would start past the deadline
                out = self._deadline_outcome(why, attempt, a.outcome.message)
                out.backoff_s = waited
                return out
            waited += backoff
            a.outcome.backoff_s = waited
            if self.offline.wait(backoff):  # wakes at once when the run goes offline
                a.outcome.message = f"gave up after {attempt} attempt(s), the service is unreachable; last: {a.outcome.message}"
                return a.outcome
        raise AssertionError("unreachable")


def _local_candidates(local_dir: Path, key: str, name: str) -> list[Path]:
    """Where a cutout may lie in a local directory: its cache key, the key's file name, or
    ``<name>.fits``; a candidate that resolves outside ``local_dir`` (a name such as
    ``../../x``, a link out of it) is never read."""
    root = local_dir.resolve()
    out = []
    for c in (local_dir / key, local_dir / Path(key).name, local_dir / f"{name}.fits"):
        try:
            inside = root in c.resolve().parents
        except (OSError, RuntimeError):   # a link loop
            inside = False
        if inside:
            out.append(c)
    return out


def _checked_positions(positions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(names, RA, Dec) of ``positions``; refuses missing columns and bad coordinates, naming the
    rows."""
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
    return names, ra, dec


def _cached_outcomes(keys: Iterable[str], cache_dir: Path, spec: CutoutSpec, messages: list[str]) -> dict[str, Outcome]:
    """``cached`` for each key whose file in ``cache_dir`` validates; an invalid file is removed
    (to be fetched again) and counted in ``messages``."""
    outcomes: dict[str, Outcome] = {}
    cache_invalid = 0
    for k in keys:
        path = cache_dir / k
        if path.is_file():
            try:
                read_cutout(path, spec.size_px, str(path), spec.max_nonfinite_frac)
                outcomes[k] = Outcome("cached")
            except CutoutInvalid:
                cache_invalid += 1
                path.unlink()
    if cache_invalid:
        messages.append(f"{cache_invalid} cached cutout(s) failed validation and were removed; fetching them again")
    return outcomes


def _local_outcomes(todo: list[str], source: str, cache_dir: Path, spec: CutoutSpec, name_of: Mapping[str, str],
                    progress: bool) -> dict[str, Outcome]:
    """Each key of ``todo`` from the local directory ``source`` (``_local_candidates``), validated and copied
    into the cache where the copy differs: ``local``, or failed (``not_in_local_dir`` or the
    cutout's reason)."""
    local_dir = Path(source)
    if not local_dir.is_dir():
        raise CutoutError(f"cutout source {source!r} is neither '{LEGACYSURVEY}' nor an existing directory of FITS cutouts")
    outcomes: dict[str, Outcome] = {}
    for k in tqdm(todo, desc="cutouts (local)", unit="cutout", disable=not progress):
        found = next((p for p in _local_candidates(local_dir, k, name_of[k]) if p.is_file()), None)
        if found is None:
            outcomes[k] = Outcome("failed", "not_in_local_dir", message=f"no {Path(k).name} or {name_of[k]}.fits in {local_dir}")
            continue
        try:
            read_cutout(found, spec.size_px, str(found), spec.max_nonfinite_frac)
        except CutoutInvalid as exc:
            outcomes[k] = Outcome("failed", exc.reason, message=str(exc))
            continue
        body, kept = found.read_bytes(), cache_dir / k
        if not kept.is_file() or kept.read_bytes() != body:   # a changed local cutout replaces the copy
            atomic.write_bytes(kept, body)
        outcomes[k] = Outcome("local")
    return outcomes


def _remote_outcomes(client: _Client, todo: list[str], pos: Mapping[str, tuple[float, float]], progress: bool) -> dict[str, Outcome]:
    """Each key of ``todo`` (non-empty) fetched from the service. The first request goes alone:
    an unreachable service is found with one request, not len(todo), and then every other key
    is ``skipped`` as offline; the rest go ``max_concurrency`` at a time."""
    cfg, outcomes = client.cfg, {}
    with tqdm(total=len(todo), desc=f"cutouts ({cfg.host})", unit="cutout", disable=not progress) as bar:
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
    return outcomes


def _closing_messages(rows: pd.DataFrame, offline: bool, first: Outcome | None, cfg: FetchConfig) -> list[str]:
    """What the run says about itself: the service unreachable (``first``: the first request's
    outcome), and rows lost to bad answers and to either deadline."""
    messages = []
    if offline:
        messages.append(f"cutout service {cfg.host} unreachable ({first.reason}): {first.message}")
        messages.append(f"{int((rows['reason'] == 'offline').sum())} row(s) not requested")
    by = Counter(rows.loc[~rows["status"].isin(USABLE), "reason"])
    if by.get("bad_response"):
        messages.append(f"{by['bad_response']} row(s) got an HTTP 200 that is not a FITS cutout (an error page, garbage or a "
                        f"truncated file) after every retry; a later run asks again")
    if by.get("cutout_deadline"):
        messages.append(f"{by['cutout_deadline']} row(s) cut off at known_lenses.cutout_deadline_s={cfg.cutout_deadline_s:g} s "
                        f"(a server too slow to finish a cutout)")
    if by.get("run_deadline"):
        messages.append(f"the run reached known_lenses.run_deadline_s={cfg.run_deadline_s:g} s: {by['run_deadline']} row(s) "
                        f"not fetched; rerun to continue (fetched cutouts are kept)")
    return messages


def _run_status(rows: pd.DataFrame, offline: bool) -> str:
    """``offline`` (unreachable, nothing usable), ``partial`` (a row failed for a transient
    reason: a later run may get it) or ``ok``."""
    usable = rows["status"].isin(USABLE)
    if offline and not usable.any():
        return "offline"
    if (~usable & rows["reason"].map(is_transient)).any():
        return "partial"
    return "ok"


def fetch_cutouts(positions: pd.DataFrame, cache_dir: str | Path, spec: CutoutSpec, source: str = LEGACYSURVEY,
                  cfg: FetchConfig | None = None, progress: bool = True,
                  remembered: Mapping[str, tuple[str, str]] | None = None) -> FetchResult:
    """Bring a valid cutout of every row of ``positions`` (columns ``ra_deg``, ``dec_deg`` and
    optionally ``name``) into ``cache_dir``; see the module docstring for statuses and reasons.

    ``source`` is ``legacysurvey`` (use ``cfg.url_template``) or a local directory of FITS files.
    Rows sharing a rounded position share one request and one file. ``remembered`` maps request
    URLs to (reason, message) of permanent failures of an earlier run (``remembered_failures``):
    a row whose URL is there is reported again without a request, so a rerun neither hammers the
    service for known 404s nor turns them into "offline" on a machine without network; a row
    whose URL changed (another template, layer or size) is asked again."""
    cfg = cfg or FetchConfig.from_params(None)
    t0 = time.perf_counter()
    run_deadline = time.monotonic() + cfg.run_deadline_s
    cache_dir = Path(cache_dir)
    names, ra, dec = _checked_positions(positions)
    keys = [cache_relpath(r, d, spec) for r, d in zip(ra, dec)]
    remote = source == LEGACYSURVEY
    urls = [cutout_url(cfg.url_template, r, d, spec) if remote else "" for r, d in zip(ra, dec)]
    first_row: dict[str, int] = {}
    for i, k in enumerate(keys):
        first_row.setdefault(k, i)
    messages: list[str] = []
    # a local directory is the authority on its cutouts: looked at every run, never served from the cache
    outcomes = _cached_outcomes(first_row, cache_dir, spec, messages) if remote else {}
    if remote:
        for k, i in first_row.items():
            reason, message = (remembered or {}).get(urls[i], ("", ""))
            if k not in outcomes and reason in PERMANENT_REASONS:
                outcomes[k] = Outcome("failed", reason, 0, message)
    todo = [k for k in first_row if k not in outcomes]
    client = None
    if not remote:
        outcomes.update(_local_outcomes(todo, source, cache_dir, spec, {k: names[first_row[k]] for k in todo}, progress))
    elif todo:
        client = _Client(cfg, spec, cache_dir, run_deadline)
        outcomes.update(_remote_outcomes(client, todo, {k: (ra[first_row[k]], dec[first_row[k]]) for k in todo}, progress))
    rows = pd.DataFrame({"name": names, "ra_deg": ra, "dec_deg": dec, "key": keys, "url": urls})
    for col in ("status", "reason", "attempts", "message", "backoff_s"):
        rows[col] = [getattr(outcomes[k], col) for k in keys]
    offline = bool(client is not None and client.offline.is_set())
    messages += _closing_messages(rows, offline, outcomes[todo[0]] if offline else None, cfg)
    return FetchResult(rows, _run_status(rows, offline), offline, client.requests if client else 0, time.perf_counter() - t0,
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
            images.append(read_cutout(path, spec.size_px, str(path), spec.max_nonfinite_frac))
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
                             "url": rows["url"] if "url" in rows.columns else "",
                             "status": np.where(usable, "ok", rows["status"]), "reason": rows["reason"],
                             "message": np.where(usable, "", rows["message"])})
    atomic.write_text(Path(cache_dir) / MANIFEST_NAME, manifest.to_csv(index=False, lineterminator="\n"))
    return manifest


def remembered_failures(manifest: pd.DataFrame | None) -> dict[str, tuple[str, str]]:
    """Request URL -> (reason, message) of the permanent failures (404, bad shape, no data, ...)
    a manifest recorded: the same URL would get the same answer. A manifest without URLs (an
    older one) remembers nothing. Delete the manifest to ask for them again."""
    if manifest is None or "url" not in manifest.columns:
        return {}
    m = manifest[(manifest["status"] == "failed") & manifest["reason"].isin(PERMANENT_REASONS) & (manifest["url"] != "")]
    return {u: (r, msg) for u, r, msg in zip(m["url"], m["reason"], m["message"])}


def read_manifest(cache_dir: str | Path) -> pd.DataFrame | None:
    """The manifest the cutouts stage left in ``cache_dir``; None when there is none."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    m = pd.read_csv(path, dtype={"key": str, "source": str, "url": str, "status": str, "reason": str, "message": str, "name": str},
                    keep_default_na=False)
    missing = [c for c in ("key", "status", "reason") if c not in m.columns]
    if missing:
        raise CutoutError(f"{path} lacks column(s) {missing}; rerun `dvc repro cutouts`")
    return m
