"""HTML building blocks for the self-contained report: escaping, tables, embedded images, the page.

Everything lands in one file: CSS inline, figures as ``data:image/png;base64`` URIs, one small
inline script. A Content-Security-Policy meta tag forbids every other source, so a browser
refuses any external request the page might make (and the image would show as broken, which
the page's own self-check counts).

Self-check: after ``load`` the inline script counts the images, the ones that failed to decode
(``naturalWidth == 0``), the sections whose body is empty and the sections with a table wider
than the section at the window's width (cut off or scrolling), writes the result as JSON into
``<body data-selfcheck=...>`` (read by the test through ``chromium --dump-dom``) and prints it
in the footer.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_TABLE_ROWS = 80


def esc(x: Any) -> str:
    """HTML-escape any value's text (quotes included, so it is safe in attributes too)."""
    return html.escape(str(x), quote=True)


def fmt(x: Any, digits: int = 4) -> str:
    """A value as short display text: floats to ``digits`` significant figures, None as a dash."""
    if x is None:
        return "\u2014"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        x = float(x)
        if math.isnan(x):
            return "NaN"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def png_uri(png: bytes | str | Path) -> str:
    """``data:`` URI of PNG bytes or a PNG file; refuses anything that is not a PNG."""
    if isinstance(png, (str, Path)):
        path = Path(png)
        data = path.read_bytes()
        source = str(path)
    else:
        data, source = bytes(png), "figure"
    if not data.startswith(PNG_MAGIC):
        raise ValueError(f"{source} is not a PNG (first bytes {data[:8]!r}); the report embeds PNG figures only")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def img(png: bytes | str | Path, alt: str, caption: str | None = None, width: int | None = None) -> str:
    """A ``<figure>`` with the PNG embedded; ``caption`` is plain text (escaped)."""
    style = f' style="max-width:{int(width)}px"' if width else ""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_uri(png)}" alt="{esc(alt)}"{style}>{cap}</figure>'


def notice(kind: str, text: str) -> str:
    """A coloured one-line notice: kind is notrun | error | warn | info."""
    if kind not in ("notrun", "error", "warn", "info"):
        raise ValueError(f"notice kind must be notrun, error, warn or info, got {kind!r}")
    return f'<p class="notice {kind}">{esc(text)}</p>'


def not_run(what: str, missing: str | Sequence[str]) -> str:
    """The standard message of a section (or part of one) whose input is absent."""
    paths = [missing] if isinstance(missing, str) else list(missing)
    return notice("notrun", f"not run: {what} ({', '.join(paths)} not found)")


def badge(state: bool | None, yes: str = "PASS", no: str = "FAIL", unknown: str = "not run") -> str:
    cls, text = ("pass", yes) if state is True else ("fail", no) if state is False else ("unknown", unknown)
    return f'<span class="badge {cls}">{esc(text)}</span>'


def _align(v: Any) -> str:
    return ' class="num"' if isinstance(v, numbers.Number) and not isinstance(v, bool) else ""


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], raw_cols: Iterable[int] = (), cls: str = "") -> str:
    """A table of display values; columns listed in ``raw_cols`` hold trusted HTML (badges)."""
    raw = set(raw_cols)
    rows = list(rows)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for r in rows[:MAX_TABLE_ROWS]:
        cells = "".join(f"<td{_align(v)}>{v if i in raw else esc(fmt(v))}</td>" for i, v in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    more = f'<p class="more">{len(rows) - MAX_TABLE_ROWS} more rows not shown</p>' if len(rows) > MAX_TABLE_ROWS else ""
    c = f' class="{esc(cls)}"' if cls else ""
    return f'<div class="tw"><table{c}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{more}'


def flatten(obj: Any, prefix: str = "", max_depth: int = 4) -> list[tuple[str, Any]]:
    """Dotted (key, value) pairs of nested mappings; lists stay whole."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, Mapping) and max_depth > 0:
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping) and v:
                out.extend(flatten(v, key, max_depth - 1))
            else:
                out.append((key, v))
    else:
        out.append((prefix or "value", obj))
    return out


@dataclass
class Section:
    """One ``<section>`` of the page. ``status``: ok | partial | notrun | error (shown in the index)."""

    id: str
    title: str
    body: str
    status: str = "ok"

    def render(self) -> str:
        if not self.body.strip():
            # never silently empty: an empty body is a bug in the section builder
            raise ValueError(f"section {self.id!r} has an empty body; every section must say what it shows or why not")
        return (f'<section id="{esc(self.id)}" class="status-{esc(self.status)}"><h2>{esc(self.title)}</h2>'
                f'<div class="body">{self.body}</div></section>')


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#14213d;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px 0;font-size:26px}
header p{margin:2px 0;color:#cdd5e0;font-size:13px}
main{padding:8px 32px 32px 32px;max-width:1320px}
nav{font-size:13px;margin:12px 0}
nav a{margin-right:12px;color:#14213d}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 20px;margin:16px 0}
section h2{margin:4px 0 10px 0;font-size:20px;border-bottom:2px solid #e9ecef;padding-bottom:4px}
section h3{font-size:16px;margin:14px 0 6px 0}
section h4{font-size:14px;margin:10px 0 4px 0;color:#444}
div.tw{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px 0}
th,td{border:1px solid #d0d5db;padding:3px 8px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#eef1f4;text-align:center}
table.kv td:last-child{text-align:left;font-family:ui-monospace,monospace}
figure{display:inline-block;margin:6px 10px 6px 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #e1e4e8}
figcaption{font-size:12px;color:#555;max-width:640px}
.notice{padding:6px 10px;border-radius:4px;font-size:14px;margin:6px 0}
.notrun{background:#f1f3f5;color:#495057;border-left:4px solid #adb5bd}
.error{background:#fdecea;color:#8a1c1c;border-left:4px solid #d93025}
.warn{background:#fff4e5;color:#7a4b00;border-left:4px solid #f29900}
.info{background:#e8f1fb;color:#17406d;border-left:4px solid #4a90d9}
.badge{display:inline-block;white-space:nowrap;padding:2px 10px;border-radius:10px;font-weight:600;font-size:13px}
.badge.pass{background:#1e8e3e;color:#fff}
.badge.fail{background:#d93025;color:#fff}
.badge.unknown{background:#adb5bd;color:#fff}
.result{background:#fff;border-left:4px solid #1a73e8;padding:6px 16px;margin:12px 0}.result h2{margin:6px 0}
.result li{margin:6px 0;font-size:15px}.warnword{color:#d93025}
.gatebar{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.gatebar div{background:#fff;border:2px solid #adb5bd;border-radius:6px;padding:8px 14px;font-size:15px}
.gatebar div.pass{border-color:#1e8e3e}.gatebar div.fail{border-color:#d93025;background:#fdecea}
.more{font-size:12px;color:#666}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:8px;font-size:12px;overflow-x:auto}
footer{font-size:12px;color:#666;padding:0 32px 24px 32px}
"""

SELFCHECK_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; });
  var secs = Array.prototype.slice.call(document.querySelectorAll('section'));
  var empty = secs.filter(function (s) {
    var b = s.querySelector('.body');
    return !b || (b.textContent.trim() === '' && !b.querySelector('img,table'));
  }).map(function (s) { return s.id; });
  // a table wider than its section is cut off (or scrolls) at this window width
  var wide = [];
  secs.forEach(function (s) {
    var b = s.querySelector('.body');
    if (!b) { return; }
    var right = b.getBoundingClientRect().right + 1;
    Array.prototype.forEach.call(b.querySelectorAll('table'), function (t) {
      if (t.getBoundingClientRect().right > right && t.offsetParent !== null) { wide.push(s.id); }
    });
  });
  var res = {images: imgs.length, broken: broken, sections: secs.length, empty: empty,
             wide_tables: wide.filter(function (v, i, a) { return a.indexOf(v) === i; })};
  document.body.setAttribute('data-selfcheck', JSON.stringify(res));
  var el = document.getElementById('selfcheck');
  if (el) { el.textContent = 'page self-check: ' + imgs.length + ' images, ' + broken.length + ' broken; ' +
                              secs.length + ' sections, ' + empty.length + ' empty'; }
});
"""


# the page's one script is allowed by its hash, so no other script (an injected handler or tag) runs;
# nothing may set a base URL or submit a form
SELFCHECK_SHA256 = base64.b64encode(hashlib.sha256(SELFCHECK_JS.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{SELFCHECK_SHA256}'; "
       f"base-uri 'none'; form-action 'none'")


def page(title: str, subtitle_lines: Sequence[str], banner: str, sections: Sequence[Section], footer: str = "") -> str:
    """The whole document. ``banner`` is trusted HTML shown above the index (the gate summary)."""
    if not sections:
        raise ValueError("a report needs at least one section")
    ids = [s.id for s in sections]
    if len(set(ids)) != len(ids):
        raise ValueError(f"section ids must be unique, got {ids}")
    nav = " ".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    subs = "".join(f"<p>{esc(line)}</p>" for line in subtitle_lines)
    body = "\n".join(s.render() for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body><header><h1>{esc(title)}</h1>{subs}</header>
<main>{banner}<nav>{nav}</nav>
{body}
</main><footer>{footer} <span id="selfcheck">page self-check did not run (JavaScript off)</span></footer>
<script>{SELFCHECK_JS}</script>
</body></html>
"""
