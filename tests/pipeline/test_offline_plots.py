"""`dvc plots show` / `dvc plots diff` pages draw their plots with no network: the project's HTML
template (.dvc/config plots.html_template -> .dvc/plots_html/offline.html) carries Vega, Vega-Lite
and Vega-Embed inline, byte for byte the npm builds its README names (real DVC in a small repo,
real headless Chromium with every host unresolvable and a dead proxy)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO

HTML_DIR = REPO / ".dvc/plots_html"
CSV = "plots/completeness/small_cnn/theta_e_over_psf.csv"
SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", re.I)


def _build_module():
    spec = importlib.util.spec_from_file_location("plots_html_build", HTML_DIR / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _offline_browser(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    """Headless Chromium with no way out: every host name fails to resolve, every request goes to
    a proxy on a closed port, no background or component-update traffic."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
           "--virtual-time-budget=5000", "--window-size=1000,700", *mode, page.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


def _drawn(page: Path, tmp: Path) -> tuple[str, int]:
    """The DOM Chromium built for the page, and how many strongly coloured pixels it painted
    (the curves and bands; axes, text and background are grey)."""
    name = f"{page.parent.name}-{page.parent.parent.name}"
    dom = _offline_browser(page, tmp / f"profile-dom-{name}", "--dump-dom").stdout
    shot = tmp / f"{name}.png"
    _offline_browser(page, tmp / f"profile-shot-{name}", f"--screenshot={shot}")
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    coloured = int(((px.max(axis=2) - px.min(axis=2)) > 60).sum())
    return dom, coloured


def _marks(dom: str) -> list[tuple[int, int]]:
    """Sizes of the canvases/SVGs Vega drew its marks into (class="marks")."""
    out = []
    for tag in re.findall(r"<(?:canvas|svg)\b[^>]*\bclass=\"marks\"[^>]*>", dom):
        w, h = (re.search(rf'\b{a}="(\d+)', tag) for a in ("width", "height"))
        out.append((int(w.group(1)) if w else 0, int(h.group(1)) if h else 0))
    return out


def _dvc(args: list[str], cwd: Path, env: dict) -> Path:
    res = subprocess.run(["dvc", "plots", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    uri = res.stdout.strip().splitlines()[-1]
    assert uri.startswith("file://"), res.stdout
    return Path(uri.removeprefix("file://"))


def _small_repo(root: Path) -> tuple[Path, dict]:
    """git + DVC repo with one of the project's completeness CSVs declared as the project declares
    it (template completeness_band, x bin_center, y completeness), committed; no plots config yet."""
    import os

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    root.mkdir()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    (root / ".dvc/plots").mkdir()
    shutil.copy2(REPO / ".dvc/plots/completeness_band.json", root / ".dvc/plots/")
    (root / CSV).parent.mkdir(parents=True)
    shutil.copy2(REPO / CSV, root / CSV)
    (root / "dvc.yaml").write_text(f"plots:\n  - {CSV}:\n      template: completeness_band\n      x: bin_center\n      y: completeness\n")
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "plots"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root, env


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does it)")
def test_dvc_plots_pages_draw_with_the_network_blocked(tmp_path):
    work, env = _small_repo(tmp_path / "repo")

    # DVC's own page, as a control: it loads Vega from the CDN, so with the network blocked the
    # browser draws nothing (this also shows the block holds and the checks below can fail)
    default = _dvc(["show", "-o", "default_page"], work, env)
    srcs = SCRIPT_SRC.findall(default.read_text())
    assert len(srcs) == 3 and all(s.startswith("https://cdn.jsdelivr.net/") for s in srcs), srcs
    dom, coloured = _drawn(default, tmp_path)
    assert _marks(dom) == [] and coloured < 50, (_marks(dom), coloured)

    # the project's plots option and template, as committed
    shutil.copy2(REPO / ".dvc/config", work / ".dvc/config")
    shutil.copytree(HTML_DIR, work / ".dvc/plots_html")
    assert "html_template = plots_html/offline.html" in (work / ".dvc/config").read_text()

    # a second revision in the workspace: every primary completeness halved
    lines = (work / CSV).read_text().splitlines()
    head = lines[0].split(",")
    ip, ic = head.index("primary"), head.index("completeness")
    rows = [r.split(",") for r in lines[1:]]
    for r in rows:
        if r[ip] == "1":
            r[ic] = str(float(r[ic]) / 2)
    (work / CSV).write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    (work / "sub").mkdir()

    pages = {
        "show": _dvc(["show"], work, env),                                # dvc_plots/index.html
        "show from a subdirectory": _dvc(["show"], work / "sub", env),    # sub/dvc_plots/index.html
        "diff -o": _dvc(["diff", "HEAD", "-o", "compare"], work, env),    # compare/index.html
    }
    assert pages["show"] == work / "dvc_plots/index.html"
    assert pages["show from a subdirectory"] == work / "sub/dvc_plots/index.html"
    assert pages["diff -o"] == work / "compare/index.html"
    for what, page in pages.items():
        text = page.read_text()
        assert SCRIPT_SRC.findall(text) == [], f"{what}: the page loads scripts from elsewhere"
        assert not re.search(r"<(?:link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?https?:", text, re.I), what
        dom, coloured = _drawn(page, tmp_path)
        marks = _marks(dom)
        assert len(marks) == 1 and marks[0][0] > 300 and marks[0][1] > 200, f"{what}: Vega drew no plot {marks}"
        assert coloured > 500, f"{what}: the plot area is blank ({coloured} coloured pixels)"
    diff_text = pages["diff -o"].read_text()
    assert '"rev": "HEAD"' in diff_text and '"rev": "workspace"' in diff_text


def test_the_inlined_builds_are_the_npm_files_the_readme_names_at_the_versions_dvc_loads():
    build = _build_module()
    template = (HTML_DIR / "offline.html").read_bytes()
    scripts = build.extract(template)
    assert [s["name"] for s in scripts] == ["vega", "vega-lite", "vega-embed"]
    # the README's table: package | version | tarball | file | bytes | licence | sha256
    readme = (HTML_DIR / "README.md").read_text()
    table = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip().strip("|").split("|")] for line in readme.splitlines()
        if re.match(r"\|\s*vega", line))}
    assert sorted(table) == ["vega", "vega-embed", "vega-lite"]
    for s in scripts:
        name, version, tarball, file, size, _licence, digest = table[s["name"]]
        assert (s["version"], s["tarball"], s["file"]) == (version, tarball, file)
        assert tarball == f"{name}-{version}.tgz" and file == f"build/{name}.min.js"
        assert len(s["body"]) == int(size)
        assert hashlib.sha256(s["body"]).hexdigest() == digest, f"{name}: the inlined build is not the file the README names"
        assert "Redistribution and use in source and binary forms" in (HTML_DIR / f"LICENSE.{name}").read_text()
    # the template is exactly what build.py makes of these builds (nothing edited by hand), and
    # has no {scripts} placeholder, where DVC would put its CDN <script> tags
    assert build.page(scripts) == template
    assert b"{scripts}" not in template and template.count(b"{plot_divs}") == 1
    # the versions DVC's own page would load from the CDN
    from dvc_render.vega import VegaRenderer

    cdn = dict(re.findall(r"cdn\.jsdelivr\.net/npm/([a-z-]+)@([0-9.]+)", VegaRenderer.SCRIPTS))
    assert cdn == {s["name"]: s["version"] for s in scripts}, f"dvc-render now loads {cdn}: rebuild (.dvc/plots_html/README.md)"


def test_the_build_refuses_a_script_that_would_break_the_page():
    build = _build_module()
    ok = {"name": "vega", "version": "1", "file": "build/vega.min.js", "tarball": "vega-1.tgz", "body": b"var a=1;\n"}
    assert build.extract(build.page([ok])) == [ok]
    for body in (b"var s='</SCRIPT>';", b"var s='{plot_divs}';"):
        with pytest.raises(SystemExit):
            build.page([{**ok, "body": body}])
