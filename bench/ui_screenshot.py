"""Open the Prefect UI's deployments page in headless Chromium, save a PNG, and check the deployments render.

Needs the stack up and the deployments registered (`hybridops serve` running, or run once before).
Debian: `apt-get install -y chromium`. Prints one JSON object: the PNG path, and which hybridops
deployment names the rendered page (Chromium's --dump-dom of the same URL) contains.

    python bench/ui_screenshot.py [--out var/screenshots/prefect-deployments.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridops.tasks.core.settings import load_settings  # noqa: E402

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1400,900", "--virtual-time-budget=15000",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("chromium not found: apt-get update && apt-get install -y chromium")


def run_chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """One headless Chromium call with a fresh profile (no state shared between calls)."""
    with tempfile.TemporaryDirectory(prefix="hybridops-chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    if header[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", header[16:24])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default $HYBRIDOPS_HOME/screenshots/...).")
    parser.add_argument("--url", default=None, help="Page to open (default: the Prefect UI deployments page).")
    args = parser.parse_args()

    from hybridops.flows.orchestration.deployments import deployment_specs

    settings = load_settings()
    url = args.url or settings.prefect_api_url.removesuffix("/api") + "/deployments"
    out = (args.out or settings.home / "screenshots" / "prefect-deployments.png").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)

    shot = run_chromium([f"--screenshot={out}", url])
    if not out.exists():
        raise SystemExit(f"chromium wrote no screenshot (exit {shot.returncode}): {shot.stderr[-2000:]}")
    dom = run_chromium(["--dump-dom", url]).stdout
    names = [spec.name(settings) for spec in deployment_specs(settings)]
    shown = [name for name in names if name in dom]
    width, height = png_size(out)
    print(json.dumps({"png": str(out), "url": url, "bytes": out.stat().st_size, "width": width, "height": height,
                      "deployments_expected": names, "deployments_in_page": shown,
                      "ok": len(shown) == len(names)}))


if __name__ == "__main__":
    main()
