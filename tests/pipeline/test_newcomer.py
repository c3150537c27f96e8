"""The newcomer's path through the README: its first screen (the two commands, the run time, the
glossary), the pages it and the other docs cite, and its quick start run for real on a tiny
survey with an undertrained finder, which still ends in a report whose first words are the result."""

from __future__ import annotations

import json
import re
import subprocess
from html import unescape

import pytest
import yaml

from tests.conftest import REPO, tiny_pipeline_copy

README = REPO / "README.md"


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(heading above it, lines) of every ```bash block."""
    out, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```bash\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        else:
            out.append((heading, [x for x in m.group(2).splitlines() if x.strip()]))
    return out


def command(line: str) -> str:
    return line.split("  #")[0].split(" # ")[0].strip()


def test_the_readme_opens_with_the_two_commands_their_run_time_and_the_glossary():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 220, len(lines)
    heading, first = fenced_blocks(text)[0]
    assert heading == "Dark Halo Scope" and [command(x) for x in first] == ["make repro", "make test"], first
    assert re.search(r"~\d+ min", first[0]), "the run time belongs beside make repro"
    assert text.index("```bash") < 200                                  # the commands are the first thing
    assert "docs/glossary.md" in "\n".join(lines[:20]), "the glossary is linked on the first screen"
    assert not re.search(r"^\s*open ", text, re.M), "`open` is macOS-only"
    for section in ("Quick start", "Measure your own finder", "Measure on your own hosts"):
        assert f"## {section}" in text


def test_every_page_the_project_cites_exists():
    sources = [README, REPO / "params.yaml", REPO / "dvc.yaml", *sorted((REPO / "docs").glob("*.md")),
               *sorted((REPO / "dhs").rglob("*.py")), *sorted((REPO / "stages").glob("*.py"))]
    missing = {f"{src.relative_to(REPO)}: {ref}" for src in sources for ref in re.findall(r"docs/[\w.-]+\.md", src.read_text())
               if not (REPO / ref).is_file()}
    assert not missing, sorted(missing)


@pytest.mark.slow
def test_the_quick_start_runs_and_the_report_opens_with_the_result_even_for_an_undertrained_finder(tmp_path):
    work, env, p = tiny_pipeline_copy(tmp_path / "repo", 240)
    p["train"].update(lr=1e-9)   # a finder that learns nothing: every stage must still end, and the report say why
    p["known_lenses"]["max_lenses"] = 3
    (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for cmd in (["git", "add", "params.yaml"], ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
    quick = next(lines for heading, lines in fenced_blocks(README.read_text()) if heading == "Quick start")
    outputs = {}
    for line in quick:
        cmd = command(line)
        if cmd.startswith("source "):
            continue          # the environment this test runs in
        if cmd.startswith("python -m webbrowser"):
            assert (work / cmd.split()[-1]).is_file(), cmd
            continue
        r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=1500)
        assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
        outputs[cmd] = r.stdout + r.stderr
    # the metrics a person reads at the terminal: one short table, not a thousand-character line
    shown = outputs["dvc metrics show"]
    assert "summary.json" in shown and "small_cnn" in shown and max(map(len, shown.splitlines())) < 600, shown[:2000]
    # a second run does nothing but ask for the known-lens cutouts again
    again = subprocess.run(["dvc", "repro"], cwd=work, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and not re.findall(r"Running stage '(?!cutouts)", again.stdout), again.stdout[-2000:]
    # the report's first words are the result; what makes its numbers unreadable is said there
    html = (work / "plots/report/index.html").read_text()
    box = unescape(re.sub(r"<[^>]+>", " ", html[html.index('id="result"'):html.index('id="gate-banner"')]))
    assert "Result" in box and "At FPR 1%" in box and "small_cnn" in box, box[:1000]
    summary = json.loads((work / "summary.json").read_text())["small_cnn"]
    cal = json.loads((work / "metrics/calibration/small_cnn.json").read_text())
    if cal["status"] == "degenerate":
        assert "calibration:" in box and cal["cause"][:60] in " ".join(box.split())
    if summary["auroc"] < 0.6:
        assert "barely tells injections from controls" in box
    assert summary["calibration"] == cal["status"] and summary["gates"] in ("PASS", "FAIL")
