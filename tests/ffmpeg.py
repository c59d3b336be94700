"""torchcodec for the decoder tests: it decodes with the system's FFmpeg libraries, which Debian's packages give
(installed with apt when missing, as ``browser.py`` installs Chromium); the test is skipped, saying why, only where
that is impossible. Installed before torchcodec is first imported: it looks for FFmpeg once, at import."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import shutil
import subprocess

import pytest

# Debian 12's FFmpeg 5.1: libavdevice and libavfilter bring the rest of what torchcodec links against.
DEBIAN_FFMPEG = ("libavdevice59", "libavfilter8")


def torchcodec_ready() -> None:
    """Return once torchcodec can decode here; skip the test if it cannot be made to."""
    if importlib.util.find_spec("torchcodec") is None:
        pytest.skip("torchcodec is not installed (the .[torchcodec] extra)")
    if not (ctypes.util.find_library("avdevice") and ctypes.util.find_library("avfilter")):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("FFmpeg's libraries are not installed and cannot be: Debian's packages need root and apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_FFMPEG]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
            if done.returncode != 0:
                pytest.skip(f"FFmpeg's libraries are not installed and `{' '.join(command)}` failed: {done.stderr.strip()[-300:]}")
    from trainable.data.video import missing_torchcodec

    if why := missing_torchcodec():
        pytest.skip(why)
