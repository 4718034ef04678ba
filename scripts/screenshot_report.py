"""Screenshot an HTML report in headless Chromium, as a reader's browser first shows it.

    python scripts/screenshot_report.py experiments/bigbench-smollm2/report.html \
        experiments/bigbench-smollm2/report_screenshot.png --height 1850

Needs ``chromium`` (``apt-get install chromium``) or Chrome on the PATH. The PNG is reduced to a small palette
(``--colors``) so that it stays small enough to commit.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def browser() -> str | None:
    """The first headless-capable Chromium on the PATH."""
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def screenshot(html: Path, out: Path, width: int = 1200, height: int = 1850, colors: int = 64) -> Path:
    """Render ``html`` at ``width`` x ``height`` CSS pixels and write the PNG to ``out`` (palette of ``colors``)."""
    exe = browser()
    if exe is None:
        raise SystemExit("no chromium on the PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--screenshot={raw}", f"--window-size={width},{height}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=120)
        from PIL import Image

        img = Image.open(raw).convert("RGB")
        if colors:
            img = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1850)
    ap.add_argument("--colors", type=int, default=64, help="palette size (0: full colour)")
    args = ap.parse_args(argv)
    path = screenshot(args.html, args.out, args.width, args.height, args.colors)
    print(f"{path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
