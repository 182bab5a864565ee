"""The report in a real browser: headless Debian Chromium loads ``index.html`` and every
figure must be decoded (``naturalWidth > 0``).

A harness page beside the report loads it in an iframe, reads each ``<img>`` once the
report has loaded and writes the result into its own DOM, which ``--dump-dom`` prints.
A copy of the report with one corrupted image checks that the harness does see a broken
figure. CI installs Chromium (``.ci/run``); without it the test skips and says so.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.validate.test_report import POSTERIOR_FIGURES, TRUTH_FIGURES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (apt-get install chromium); .ci/run installs it",
)

HARNESS = """<!DOCTYPE html>
<html><head><meta charset="utf-8"></head><body>
<pre id="result">pending</pre>
<script>
function inspect(frame) {
  let out;
  try {
    const doc = frame.contentDocument;
    out = "RESULT:" + JSON.stringify(Array.from(doc.images).map(img => ({
      id: img.id, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
    })));
  } catch (error) {
    out = "ERROR:" + error;
  }
  document.getElementById("result").textContent = out;
}
</script>
<iframe src="PAGE" onload="inspect(this)" style="width:1280px;height:900px"></iframe>
</body></html>
"""


def rendered_images(report: Path, page: str = "index.html") -> list[dict]:
    """Every ``<img>`` of ``report/page`` as Chromium rendered it."""
    harness = report / "browser_check.html"
    harness.write_text(HARNESS.replace("PAGE", page))
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--allow-file-access-from-files", "--virtual-time-budget=15000", "--dump-dom",
        harness.resolve().as_uri(),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    finally:
        harness.unlink()
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no harness DOM (rc {done.returncode}): {done.stderr[-2000:]}"
    text = html.unescape(found.group(1))
    assert text.startswith("RESULT:"), f"the harness could not read the report: {text}"
    return json.loads(text.removeprefix("RESULT:"))


def test_report_renders_every_figure_in_chromium(toy_report):
    report, _ = toy_report
    images = rendered_images(report)
    expected = {f"fig-{name}" for name in TRUTH_FIGURES | POSTERIOR_FIGURES}
    assert {image["id"] for image in images} == expected
    for image in images:
        assert image["complete"] and image["width"] > 300 and image["height"] > 200, image


def test_harness_sees_a_broken_figure(toy_report, tmp_path):
    report, _ = toy_report
    page = (report / "index.html").read_text()
    broken = re.sub(r'(id="fig-tarp" src="data:image/png;base64,)[^"]*', r"\1AAAA", page)
    assert broken != page
    copy = tmp_path / "broken"
    copy.mkdir()
    (copy / "index.html").write_text(broken)
    widths = {image["id"]: image["width"] for image in rendered_images(copy)}
    assert widths["fig-tarp"] == 0 and widths["fig-calibration"] > 0
