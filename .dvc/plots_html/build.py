"""Build the offline HTML template for `dvc plots show` / `dvc plots diff` (.dvc/config:
plots.html_template = plots_html/offline.html) from the npm tarballs of Vega, Vega-Lite and
Vega-Embed, and rewrite this directory's README.md (versions, tarballs, sha256) and LICENSE files.

    cd /tmp && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
    python .dvc/plots_html/build.py /tmp/vega-5.20.2.tgz /tmp/vega-lite-5.2.0.tgz /tmp/vega-embed-6.18.2.tgz

Each package's browser build (the file its package.json names for jsdelivr, the one DVC's CDN URL
serves) is inlined byte for byte: DVC writes the page wherever `-o` (or plots.out_dir) says,
relative to the working directory, so a relative <script src> would not find the files.
The template has no `{scripts}` placeholder, which is where DVC would put its CDN <script> tags.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "offline.html"
ORDER = ("vega", "vega-lite", "vega-embed")   # vega-embed needs the other two as globals
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

HEAD = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
"""
SCRIPT = '<!-- {name}@{version} {file} (npm tarball {tarball}; .dvc/plots_html/README.md) -->\n<script data-vendored="{name}">'
TAIL = """</head>
<body>
    {plot_divs}
</body>
</html>
"""
# what `extract` reads back: the comment line names the package, the script's body is the file
INLINED = re.compile(rb'<!-- (?P<name>[a-z-]+)@(?P<version>[0-9][^ ]*) (?P<file>\S+) \(npm tarball (?P<tarball>\S+);[^\n]*-->\n'
                     rb'<script data-vendored="(?P=name)">(?P<body>.*?)</script>\n', re.S)


def page(scripts: list[dict]) -> bytes:
    """The template: DVC's default page without `{scripts}`, the given builds inlined in order."""
    out = HEAD.encode()
    for s in scripts:
        body = s["body"]
        if b"</script" in body.lower():
            raise SystemExit(f"{s['name']}: its build contains '</script', which would end the inline script early")
        if any(p.encode() in body for p in DVC_PLACEHOLDERS):
            raise SystemExit(f"{s['name']}: its build contains a DVC placeholder {DVC_PLACEHOLDERS}, which DVC would replace")
        out += SCRIPT.format(**{k: s[k] for k in ("name", "version", "file", "tarball")}).encode() + body + b"</script>\n"
    return out + TAIL.encode()


def extract(template: bytes) -> list[dict]:
    """The builds inlined in a template, in order (name, version, file, tarball, body)."""
    return [{k: (v if k == "body" else v.decode()) for k, v in m.groupdict().items()} for m in INLINED.finditer(template)]


def _from_tarball(path: Path) -> tuple[dict, bytes]:
    with tarfile.open(path) as tar:
        meta = json.load(tar.extractfile("package/package.json"))
        file = meta.get("jsdelivr") or meta["unpkg"]
        file = file.removeprefix("./")
        body = tar.extractfile(f"package/{file}").read()
        licence = tar.extractfile("package/LICENSE").read()
    return {"name": meta["name"], "version": meta["version"], "file": file, "tarball": path.name,
            "tarball_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "body": body, "license": meta.get("license")}, licence


def readme(scripts: list[dict]) -> str:
    rows = "\n".join(f"| {s['name']} | {s['version']} | {s['tarball']} | {s['file']} | {len(s['body'])} | {s['license']} | "
                     f"{hashlib.sha256(s['body']).hexdigest()} |" for s in scripts)
    tar_rows = "\n".join(f"- `{s['tarball']}`: sha256 `{s['tarball_sha256']}`" for s in scripts)
    return f"""# Vega for `dvc plots`, offline

`offline.html` is the HTML template `dvc plots show` and `dvc plots diff` fill
(`.dvc/config`: `plots.html_template = plots_html/offline.html`). It carries the browser builds of
Vega, Vega-Lite and Vega-Embed inline, so the page DVC writes draws its plots with no network;
DVC's own page loads them from cdn.jsdelivr.net and stays blank offline. They are inlined rather
than linked because DVC writes the page under the directory `-o` names (default `dvc_plots/`),
relative to the working directory, where no relative link could find them.

The versions are the ones DVC's default page loads (dvc-render's `VegaRenderer.SCRIPTS`). Each
file is the package's `jsdelivr` build from its npm tarball, byte for byte (LICENSE.<package>
here: each is BSD-3-Clause). `tests/pipeline/test_offline_plots.py` checks these digests against
the template and renders a page in Chromium with the network blocked.

| package | version | npm tarball | file | bytes | licence | sha256 of the file |
|---|---|---|---|---|---|---|
{rows}

Tarballs (`npm pack`):

{tar_rows}

To update (e.g. after dvc-render changes its CDN versions):

```bash
grep cdn.jsdelivr .venv/lib/python3.11/site-packages/dvc_render/vega.py   # the versions DVC loads
cd /tmp && npm pack vega@X vega-lite@Y vega-embed@Z
python .dvc/plots_html/build.py /tmp/vega-X.tgz /tmp/vega-lite-Y.tgz /tmp/vega-embed-Z.tgz
```
"""


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    found = {}
    for arg in argv:
        s, licence = _from_tarball(Path(arg))
        found[s["name"]] = (s, licence)
    if sorted(found) != sorted(ORDER):
        raise SystemExit(f"expected the tarballs of {ORDER}, got {sorted(found)}")
    scripts = [found[n][0] for n in ORDER]
    TEMPLATE.write_bytes(page(scripts))
    for n in ORDER:
        (HERE / f"LICENSE.{n}").write_bytes(found[n][1])
    (HERE / "README.md").write_text(readme(scripts))
    for s in scripts:
        print(f"{s['name']}@{s['version']} {s['file']} {len(s['body'])} bytes")
    print(f"wrote {TEMPLATE} ({TEMPLATE.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
