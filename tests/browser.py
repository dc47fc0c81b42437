"""Open a report in headless Chromium and say what a person would see: console errors, images that did not
decode, audio without a playable source, requests that left the page, how far the content reaches beyond the
page's width (a phone's, 390 CSS pixels, or a laptop's) and how varied a screenshot is (a blank page is not).

The report itself has no script: a copy with one checking script appended is what Chromium opens
(``--dump-dom`` prints the page after the script ran); console messages come from Chromium's log on stderr and
requests from the Resource Timing entries of the page (what it fetched)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

CHECK = """<script>
// inside a box that scrolls or clips (a wide table in its own scroller) an element does not widen the page
const clipped = e => { for (let p = e.parentElement; p && p !== document.body; p = p.parentElement)
  if (getComputedStyle(p).overflowX !== 'visible') return true; return false; };
window.addEventListener('load', async () => {
  const imgs = [...document.images];
  const audios = [...document.querySelectorAll('audio')];
  const durations = await Promise.all(audios.map(a => a.readyState >= 1 ? a.duration : new Promise(ok => {
    a.addEventListener('loadedmetadata', () => ok(a.duration)); a.addEventListener('error', () => ok(0));
    setTimeout(() => ok(0), 5000); })));
  const out = document.createElement('pre'); out.id = 'vqvae-check';
  out.textContent = JSON.stringify({images: imgs.length,
    broken_images: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
    audios: audios.length, silent_audios: durations.filter(d => !(d > 0)).length,
    overflow: Math.max(0, ...[...document.body.querySelectorAll('*')].filter(e => !clipped(e))
      .map(e => e.getBoundingClientRect().right)) - document.documentElement.offsetWidth,
    requests: performance.getEntriesByType('resource').map(e => e.name)
      .filter(u => !u.startsWith('data:') && !u.startsWith('file:'))});
  document.body.appendChild(out);
});
</script>"""


def _chromium(binary: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
             "--allow-file-access-from-files", "--enable-logging=stderr", "--v=0",
             # the browser's own traffic (updates, time, safe browsing) is not the page's
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-pings",
             "--disable-client-side-phishing-detection", "--disable-default-apps", "--metrics-recording-only",
             "--disable-domain-reliability", "--disable-features=OptimizationHints,MediaRouter,Translate"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=timeout)


def open_page(binary: str, page: Path, screenshot: Path, width: int = 1100) -> dict:
    """``width``: of the page in CSS pixels (390: a phone; headless Chromium's window is at least 500 wide, so
    below that the page's root element is set to ``width``); ``overflow`` in the result is how far the content
    reaches beyond it (> 0: a reader would scroll sideways)."""
    page = page.resolve()
    if "</head>" not in page.read_text():
        raise ValueError(f"{page} has no </head>: the page width cannot be set")
    narrow = f"<style>html{{width:{width}px}}</style>" if width < 500 else ""  # narrower than a window can be
    sized = page.read_text().replace("</head>", f"{narrow}</head>", 1)
    checked, shown = page.with_name(page.stem + ".checked.html"), page.with_name(page.stem + ".sized.html")
    checked.write_text(sized.replace("</body>", CHECK + "</body>"))
    shown.write_text(sized)
    window = f"--window-size={max(width, 500)},1400"
    dom = _chromium(binary, "--virtual-time-budget=15000", window, "--dump-dom", checked.as_uri())
    found = re.search(r'<pre id="vqvae-check">(.*?)</pre>', dom.stdout, re.S)
    if not found:
        raise RuntimeError(f"chromium did not run the check: {dom.stderr[-2000:]}")
    result = json.loads(found.group(1).replace("&quot;", '"'))
    result["console_errors"] = [line for line in dom.stderr.splitlines()
                                if "CONSOLE" in line and ("error" in line.lower())
                                and "vqvae-check" not in line]
    shot = _chromium(binary, f"--screenshot={screenshot}", window, shown.as_uri())
    if not screenshot.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {shot.stderr[-2000:]}")
    gray = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    result["screenshot_variance"] = float(gray.var())
    return result
