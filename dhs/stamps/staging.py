"""Stage a Phase 4c stamp dataset from S3 or a local directory onto local disk.

"Stage to local NVMe first; never stream from S3 during training." The copy:

- runs in parallel (threads; the work is I/O) with a progress bar in bytes;
- writes each file to ``<name>.part`` and renames it when complete and verified, so an
  interrupted copy never leaves a truncated shard under its final name; a ``.part`` that a
  killed copy left behind is removed when the next copy starts (it is never complete);
- verifies every file: size against the listing, and for S3 the MD5 against a single-part ETag
  (multipart ETags are not an MD5, so those are checked by size and recorded by SHA-256);
- records what it copied in ``.staging-manifest.json`` (per file: size, source ETag or mtime,
  SHA-256), so a rerun after an interruption skips finished files and copies only the rest.

Credentials come from the usual AWS chain (environment, profile, instance role); only the
endpoint URL can be set in params. Nothing here logs or stores a credential.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tqdm.auto import tqdm

from dhs import atomic
from dhs.errors import StageError

MANIFEST = ".staging-manifest.json"
_CHUNK = 8 << 20


class StagingError(StageError, RuntimeError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    key: str  # path relative to the dataset root, with '/' separators
    size: int
    version: str  # S3 ETag or local "mtime_ns:size": changes when the source file changes


def is_s3(source: str) -> bool:
    return source.startswith("s3://")


def describe_source(source: str) -> str:
    """The source as it may appear in logs and metrics (any userinfo stripped)."""
    if is_s3(source):
        u = urlparse(source)
        return f"s3://{u.hostname or ''}{u.path}"
    return str(source)


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - matching S3's ETag, not security
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class _Local:
    def __init__(self, root: str, exclude: Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StagingError(f"stamps.source {root!r} is neither 'synthetic', an s3:// URL nor an existing directory")
        # a staging directory inside the source is not part of it (it would copy itself on the next run)
        self.exclude = exclude.resolve() if exclude is not None else None

    def list(self) -> list[RemoteFile]:
        out = []
        for p in sorted(self.root.rglob("*")):
            if self.exclude is not None and (p.resolve() == self.exclude or self.exclude in p.resolve().parents):
                continue
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.root).parts):
                st = p.stat()
                out.append(RemoteFile(p.relative_to(self.root).as_posix(), st.st_size, f"{st.st_mtime_ns}:{st.st_size}"))
        return out

    def fetch(self, f: RemoteFile, dest: Path, progress: Callable[[int], None]) -> None:
        with open(self.root / f.key, "rb") as src, open(dest, "wb") as dst:
            for block in iter(lambda: src.read(_CHUNK), b""):
                dst.write(block)
                progress(len(block))

    def verify(self, f: RemoteFile, path: Path) -> None:
        if path.stat().st_size != f.size:
            raise StagingError(f"{self.root / f.key}: copied {path.stat().st_size} bytes, the source has {f.size} "
                               f"(it changed during the copy?)")


class _S3:
    def __init__(self, url: str, endpoint_url: str | None, max_attempts: int, timeout_s: float = 60.0):
        import boto3
        from botocore.config import Config

        u = urlparse(url)
        if not u.hostname:
            raise StagingError(f"stamps.source {describe_source(url)!r} has no bucket; expected s3://bucket/prefix")
        self.bucket, self.prefix = u.hostname, u.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        cfg = Config(retries={"max_attempts": max_attempts, "mode": "standard"}, connect_timeout=min(10.0, timeout_s), read_timeout=timeout_s,
                     max_pool_connections=64)
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=cfg)
        self.url = describe_source(url)
        self._etag_is_md5: dict[str, bool] = {}

    def list(self) -> list[RemoteFile]:
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix):]
                    parts = key.split("/")
                    # no empty components: 'prefix//etc/x' must not become an absolute path
                    if key and "" not in parts and not any(p.startswith(".") for p in parts):
                        out.append(RemoteFile(key, int(obj["Size"]), obj["ETag"].strip('"')))
        except Exception as exc:  # botocore raises many types; all mean the listing failed
            raise StagingError(f"cannot list {self.url}: {type(exc).__name__}: {exc}") from exc
        return sorted(out, key=lambda f: f.key)

    def fetch(self, f: RemoteFile, dest: Path, progress: Callable[[int], None]) -> None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.prefix + f.key)
            # with SSE-KMS or SSE-C a single-part ETag is not the MD5 of the object
            self._etag_is_md5[f.key] = resp.get("ServerSideEncryption") in (None, "AES256") and "SSECustomerAlgorithm" not in resp
            body = resp["Body"]
            with open(dest, "wb") as dst:
                for block in iter(lambda: body.read(_CHUNK), b""):
                    dst.write(block)
                    progress(len(block))
        except Exception as exc:  # network, auth, missing key: report which file
            raise StagingError(f"copying {self.where(f)} failed: {type(exc).__name__}: {exc}") from exc

    def where(self, f: RemoteFile) -> str:
        """The object's URL as the user wrote the source: prefix '/' key."""
        return f"{self.url.rstrip('/')}/{f.key}"

    def verify(self, f: RemoteFile, path: Path) -> None:
        size = path.stat().st_size
        if size != f.size:
            raise StagingError(f"{self.where(f)}: copied {size} bytes, S3 lists {f.size}")
        if "-" not in f.version and self._etag_is_md5.get(f.key, False) and _md5(path) != f.version:
            raise StagingError(f"{self.where(f)}: MD5 of the copy does not match the S3 ETag {f.version}")


@dataclass
class StagingResult:
    files: list[str]
    copied: int
    skipped: int
    bytes_copied: int


def stage(source: str, dest: str | Path, *, endpoint_url: str | None = None, workers: int = 8, max_attempts: int = 5,
          timeout_s: float = 60.0, progress: bool = True) -> StagingResult:
    """Copy every file of ``source`` (s3://bucket/prefix or a directory) into ``dest``, resuming."""
    dest = Path(dest)
    backend = _S3(source, endpoint_url, max_attempts, timeout_s) if is_s3(source) else _Local(source, exclude=dest)
    dest.mkdir(parents=True, exist_ok=True)
    origin = describe_source(source).rstrip("/")
    manifest_path = dest / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    files = backend.list()
    if not files:
        raise StagingError(f"{describe_source(source)} holds no files")
    # a copy killed mid-file leaves its <key>.part (the cleanup in copy() never ran): never complete.
    # Only those names are removed: any other *.part under the staging directory is not this stage's
    for f in files:
        part = dest / f"{f.key}.part"
        if part.is_file() and part.resolve().is_relative_to(dest.resolve()):
            part.unlink(missing_ok=True)
    lock = threading.Lock()

    def done(f: RemoteFile) -> bool:
        entry = manifest.get(f.key)
        p = dest / f.key
        return bool(entry) and entry["version"] == f.version and entry["size"] == f.size and p.is_file() and p.stat().st_size == f.size

    todo = [f for f in files if not done(f)]
    # files no longer at the source are removed so the staged copy mirrors it
    wanted = {f.key for f in files}
    for stale in [k for k in manifest if k not in wanted]:
        if (dest / stale).resolve().is_relative_to(dest.resolve()):
            (dest / stale).unlink(missing_ok=True)
        manifest.pop(stale)
    bar = tqdm(total=sum(f.size for f in todo), unit="B", unit_scale=True, desc=f"stage {describe_source(source)}", disable=not progress)

    def copy(f: RemoteFile) -> int:
        final = dest / f.key
        if not final.resolve().is_relative_to(dest.resolve()):
            raise StagingError(f"{origin}/{f.key}: the key escapes the staging directory; refusing to write outside {dest}")
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(final.name + ".part")
        try:
            backend.fetch(f, part, bar.update)
            backend.verify(f, part)
            sha = atomic.file_sha256(part)
            os.replace(part, final)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        with lock:
            manifest[f.key] = {"size": f.size, "version": f.version, "sha256": sha}
            atomic.write_json(manifest_path, manifest)
        return f.size

    errors: list[str] = []
    copied_bytes, n_copied = 0, 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(copy, f): f for f in todo}
        for fut in as_completed(futures):
            if fut.cancelled():
                continue
            try:
                copied_bytes += fut.result()
                n_copied += 1
            except (StagingError, OSError) as exc:
                errors.append(str(exc) if isinstance(exc, StagingError) else
                              f"{origin}/{futures[fut].key} -> {dest / futures[fut].key}: {type(exc).__name__}: {exc}")
                # a failing source usually fails for every file (network, credentials): stop
                # queueing new copies and let the rerun resume instead of retrying each one
                for other in futures:
                    other.cancel()
    bar.close()
    atomic.write_json(manifest_path, manifest)
    if errors:
        raise StagingError(
            f"staging {describe_source(source)} failed ({len(errors)} file(s) failed, {n_copied} copied now, "
            f"{len(files) - len(todo)} already staged, {len(todo) - n_copied - len(errors)} not attempted; "
            f"rerun to resume):\n  " + "\n  ".join(errors[:10])
        )
    return StagingResult(files=[f.key for f in files], copied=len(todo), skipped=len(files) - len(todo), bytes_copied=copied_bytes)


def link_tree(src: Path, dst: Path, keys: list[str]) -> None:
    """Materialise ``keys`` of ``src`` under ``dst`` by hard link (copy across filesystems)."""
    for key in keys:
        target = dst / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / key, target)
        except OSError:
            shutil.copy2(src / key, target)
