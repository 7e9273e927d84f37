"""`make bench-load QUICK=1`: 20 mutual-TLS clients against one real cloud process, <= 60 s."""

import json
import subprocess
import sys

import pytest
from faultlib import REPO

pytestmark = pytest.mark.slow

KEYS = (
    "config",
    "elapsed_s",
    "transitions_acked",
    "chunks_acked",
    "throughput_transitions_per_s",
    "throughput_chunks_per_s",
    "ack_latency_ms",
    "cloud_rss_mb",
    "errors",
    "error_samples",
    "lost_transitions",
    "stored_transitions",
    "robots_not_contiguous",
)


def test_bench_load_quick(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench_load.run", "--quick", "--duration", "30", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(KEYS) <= set(result)
    assert result["config"]["clients"] == 20
    assert result["errors"] == 0 and result["lost_transitions"] == 0, result["error_samples"]
    assert result["robots_not_contiguous"] == []
    assert result["transitions_acked"] == result["stored_transitions"] > 0
    assert result["ack_latency_ms"]["p50"] > 0 and result["ack_latency_ms"]["p99"] >= result["ack_latency_ms"]["p50"]
    assert len(result["cloud_rss_mb"]["samples"]) >= 20 and result["cloud_rss_mb"]["start"] > 0
