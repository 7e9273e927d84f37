"""`python -m bench.run --quick` writes a complete bench.json: every figure with value/limit/ratio or an error.

Targets are not asserted (the machine is shared; timings are reported, never asserted).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURE_KEYS = ("value", "limit", "ratio", "target", "met", "unit")


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_bench_quick_writes_complete_json(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    argv = [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert report["machine"]["cpus"] >= 1
    sys.path.insert(0, str(REPO))
    from bench.run import SECTIONS

    quick_sections = {name for name, (_, quick_timeout, _) in SECTIONS.items() if quick_timeout is not None}
    expected = [fig for name, (figures, _, _) in SECTIONS.items() if name in quick_sections for fig in figures]
    missing = [fig for fig in expected if fig not in report["figures"]]
    assert not missing, f"figures missing from bench.json: {missing}"
    for name, fig in report["figures"].items():
        for key in FIGURE_KEYS:
            assert key in fig, f"{name}: no {key!r}"
        assert fig.get("error") or fig["value"] is not None, f"{name}: no value and no error"
        if fig.get("error"):
            assert isinstance(fig["error"], str) and fig["error"]
    assert set(report["detail"]) >= quick_sections
    assert isinstance(report["notes"], dict)
