"""The chaos soak as a test: lost = 0 and duplicated = 0 under kills, reloads, a cut network and
a full disk. Sizes come from the environment (``make soak`` full length, ``make soak-ci`` 3 min):

    SOAK_SECONDS  SOAK_RATE  SOAK_KILL_EVERY  SOAK_REPORT (a path)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.live.cluster import NGINX
from tests.soak.chaos import SoakConfig, run_soak

pytestmark = pytest.mark.soak


def soak_config(model: Path) -> SoakConfig:
    seconds = float(os.environ.get("SOAK_SECONDS", "180"))
    kill_every = float(os.environ.get("SOAK_KILL_EVERY", "40"))
    return SoakConfig(
        seconds=seconds,
        rate=int(os.environ.get("SOAK_RATE", "2000")),
        kill_every_s=kill_every,
        reload_every_s=kill_every * 0.75,
        cut_at_s=min(15.0, seconds * 0.1),
        cut_for_s=30.0,
        full_at_s=seconds * 0.45,
        full_for_s=20.0,
        volume_mb=int(os.environ.get("SOAK_VOLUME_MB", "1536")),
        model_path=str(model),
    )


@pytest.mark.timeout(3600)
def test_chaos_soak(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the soak mounts a small tmpfs as its data volume: run it as root")
    if not shutil.which(NGINX) and not Path(NGINX).exists():
        pytest.skip("nginx is not installed (scripts/setup.sh installs it)")
    model = tmp_path / "model.joblib"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "netmon.app.cli",
            "model",
            "build-default",
            "--no-real-tools",
            "--model",
            str(model),
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    report = run_soak(tmp_path / "soak", soak_config(model))
    text = report.render()
    print(text)
    if path := os.environ.get("SOAK_REPORT"):
        Path(path).write_text(text + "\n")
    assert report.lost == 0, text
    assert report.duplicated == 0, text
    assert report.unexpected == 0, text
    assert report.archives_uploaded >= 1, text
    # nearly nothing is acknowledged while full (appends that fit in already allocated pages are)
    assert report.acks_while_full < 0.05 * report.rate_sent * 20, text
    assert report.feed_delivered > 0, text
