"""Retake the TensorBoard screenshots of docs/guides/tensorboard.md.

Trains the default run (64-30-10 sigmoid, quadratic cost, SGD η = 3, digits) and the same net with a
second hidden layer into a temporary log directory, serves it with TensorBoard on the loopback
address and photographs three dashboards with a headless Chromium driven by Playwright: the scalars
(the δ RMS charts switched to a log-scale y-axis), the custom scalars and the hyperparameter table.

Needs Playwright (``pip install 'torchbp[screenshots]'``) and a Chromium: Debian's (``apt-get install
chromium``) serves, so Playwright's own browser download is not needed.

Usage: python scripts/tensorboard_screenshots.py [--out docs/images] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUNS = [[], ["--layers", "64,30,30,10"]]
"""Extra ``torchbp train`` options of each run: the default net, and one with two hidden layers."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _shoot(page: Any, url: str, path: Path, size: tuple[int, int], act: Callable[[Any], None] | None = None) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(3000)  # the charts draw after their data arrives
    if act is not None:
        act(page)
        page.wait_for_timeout(2000)
    page.screenshot(path=str(path))
    print(path)


def _log_scale_on_delta_rms(page: Any) -> None:
    for card in page.locator("tf-scalar-card").filter(has_text="delta_rms").all():
        card.locator('paper-icon-button[title="Toggle y-axis log scale"]').click()


def _show_layers_and_lr(page: Any) -> None:
    for name, wanted in (("layers", True), ("lr", True), ("device", False)):
        box = page.locator("paper-checkbox").filter(has_text=name).first
        if (box.get_attribute("aria-checked") == "true") != wanted:
            box.click()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/images", help="where the PNG files go")
    parser.add_argument("--chromium", help="a Chromium executable (default: chromium on the PATH)")
    args = parser.parse_args()
    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs a Chromium: apt-get install chromium, or --chromium PATH")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("needs Playwright: pip install 'torchbp[screenshots]'")
    out = Path(args.out)
    torchbp = Path(sys.executable).parent / "torchbp"
    with tempfile.TemporaryDirectory() as logs:
        for extra in RUNS:
            command = [str(torchbp), "train", "--logdir", logs, "--name", "digits", "--seed", "0", *extra]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        port = _free_port()
        serve = ["--logdir", f"{logs}/digits", "--host", "127.0.0.1", "--port", str(port)]
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", *serve],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for(f"{base}/data/runs")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_page()
                tags = "%5E(loss%2F(train%7Cval)%24%7Caccuracy%7Cdelta_rms)"
                scalars = f"{base}/#scalars&tagFilter={tags}"
                _shoot(page, scalars, out / "tensorboard-scalars.png", (1500, 760), _log_scale_on_delta_rms)
                _shoot(page, f"{base}/#custom_scalars", out / "tensorboard-custom-scalars.png", (1500, 720))
                _shoot(page, f"{base}/#hparams", out / "tensorboard-hparams.png", (2100, 300), _show_layers_and_lr)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
