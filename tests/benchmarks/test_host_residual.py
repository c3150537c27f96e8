"""benchmarks/host_residual.py: it runs on the default params and what it prints is physics: on
faint hosts the preprocessed residual is the sky's noise beyond the central 2 px (scatter ~1,
photon noise of the host ~ the sky's; inside 2 px the cores' structure, simulate.core_structures,
and the lower-tail profile's estimate from a few pixels leave more), on hosts brighter than r = 18 the host's own photon noise is
well above the sky's inside a few pixels, and the removal's misfit (the noise-free scene through
it) is a fraction of the noise on faint hosts and grows with the host's brightness."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_host_residual_prints_noise_on_faint_hosts_and_photon_noise_on_bright_ones():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "host_residual.py"), "--per-bin", "24"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[1].isdigit():
            rows[(parts[0], parts[2])] = [float(v) for v in parts[3:]]
    assert {r for r, _ in rows} == {"<18", "18-19", "19-20", ">20"}
    for (host, radius), (median, scatter, p90, photon, misfit) in rows.items():
        assert p90 >= scatter > 0 and photon >= 0.99 and misfit >= 0
        if host == ">20" and radius != "0-2":
            assert 0.8 < scatter < 1.5 and abs(median) < 0.5 and photon < 1.2, (radius, scatter, median, photon)
            assert misfit < 0.5, (radius, misfit)
    assert rows[("<18", "0-2")][3] > 1.5 and rows[("<18", "2-4")][3] > 1.3
    # photon noise falls with radius, and the bright hosts' residual is larger than the faint ones'
    assert rows[("<18", "0-2")][3] > rows[("<18", "8-12")][3]
    assert rows[("<18", "2-4")][2] > rows[(">20", "2-4")][2]
    assert rows[("<18", "2-4")][4] > 2 * rows[(">20", "2-4")][4]
