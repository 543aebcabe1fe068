"""The HTML report in a real browser: headless Chromium loads it, every figure (an inline SVG)
decodes, every table links its LaTeX and CSV files, a link to a figure screenshots that
figure, and the page requests nothing from the network. A screenshot is kept as a test
artifact (path printed; ``HARNESS_TEST_ARTIFACTS`` overrides the folder, default
``reports/test-artifacts``).

To look at a report yourself: ``harness report RUN_DIR --open``, or screenshot it as these
tests do: ``chromium --headless --no-sandbox --hide-scrollbars --window-size=1280,3000
--screenshot=shot.png file:///abs/path/report.html`` (append ``#fig-exposure`` to the URL
for one figure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.config import RunConfig
from harness.report.html import CSP
from harness.runner import execute_run, prepare_run
from tests.conftest import REPO_ROOT, write_rankgpt_folder

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="headless Chromium not installed (Debian: apt-get install chromium; .ci/run installs "
    "it), so the in-browser check of the HTML report is skipped",
)
# Flags this machine needs (see the environment notes): no sandbox as root, and no background
# networking, whose connection attempts would otherwise be refused at every start.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--mute-audio",
)

# Runs in the page on load: decodes every image (reads a pixel back), lists every resource the
# page fetched and every request the Content-Security-Policy blocked, then writes the findings
# into the DOM for --dump-dom.
CHECKER = """<script>
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.blockedURI || e.violatedDirective));
window.addEventListener("load", () => {
  // Synchronous on purpose: --dump-dom reads the DOM right after the load event.
  const images = [...document.images].map((img) => {
    let opaque = false;
    try {  // drawing the image and reading a pixel back proves its pixels decoded
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      const x = Math.floor(img.naturalWidth / 2), y = Math.floor(img.naturalHeight / 2);
      opaque = context.getImageData(x, y, 1, 1).data[3] === 255;
    } catch (err) { opaque = false; }
    return {alt: img.alt, complete: img.complete, width: img.naturalWidth,
            height: img.naturalHeight, opaque, kind: img.src.slice(0, 26)};
  });
  const links = [...document.querySelectorAll("a[href]")].map((a) => a.getAttribute("href"));
  const resources = performance.getEntriesByType("resource").map((r) => r.name)
    .filter((name) => !name.startsWith("data:"));
  const data = JSON.parse(document.getElementById("harness-data").textContent);
  const out = document.createElement("pre");
  out.id = "harness-check";
  out.textContent = JSON.stringify({images, links, resources, runs: data.runs.length,
                                    tables: document.querySelectorAll("table").length,
                                    violations: window.__violations});
  document.body.appendChild(out);
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [BROWSER, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    # 12 candidates: more than the top 10, so position bias and its exposure plot are defined
    data = write_rankgpt_folder(root / "data", queries=3, candidates=12)
    folders = []
    for reranker, strategy in (
        ("identity", "random"),
        ("first-stage", "random"),
        ("identity", "sweep"),
    ):
        out = root / f"{reranker}-{strategy}"
        config = RunConfig(
            reranker=reranker, dataset=str(data), perms=3, strategy=strategy, out=str(out)
        ).validate()
        execute_run(prepare_run(config))
        folders.append(str(out))
    result = CliRunner().invoke(app, ["report", *folders, "--out", str(root / "report")])
    assert result.exit_code == 0, result.output
    return root / "report.html"


def _check_in_browser(report: Path, tmp_path: Path) -> dict:
    """What the checker script saw when Chromium loaded ``report``: runs, images, fetches."""
    html = report.read_text(encoding="utf-8")
    # The report's own policy forbids scripts; allow only the checker's inline script here.
    checked = html.replace(CSP, CSP + "; script-src 'unsafe-inline'", 1)
    checked = checked.replace("<head>", "<head>" + CHECKER, 1)
    page = tmp_path / "checked.html"
    page.write_text(checked, encoding="utf-8")
    result = _chromium(
        ["--virtual-time-budget=10000", "--dump-dom", page.as_uri()], tmp_path / "profile"
    )
    match = re.search(r'<pre id="harness-check">(.*?)</pre>', result.stdout, re.S)
    assert match, f"checker found no result; chromium said:\n{result.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def _keep_screenshot(report: Path, name: str, height: int, profile: Path) -> Path:
    """A PNG of ``report`` in the test-artifacts folder (kept for people to look at)."""
    folder = Path(
        os.environ.get("HARNESS_TEST_ARTIFACTS", REPO_ROOT / "reports" / "test-artifacts")
    )
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    shot.unlink(missing_ok=True)
    result = _chromium(
        [f"--window-size=1280,{height}", f"--screenshot={shot}", report.as_uri()], profile
    )
    assert shot.is_file(), result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    return shot


def test_report_loads_decodes_every_image_and_fetches_nothing(report_html, tmp_path):
    found = _check_in_browser(report_html, tmp_path)
    assert found["runs"] == 3
    assert len(found["images"]) == 8  # 7 plots and the mitigation plot of the comparable pair
    for image in found["images"]:
        assert image["kind"] == "data:image/svg+xml;base64,", image  # vector figures, drawn
        assert image["complete"] and image["opaque"], image
        assert image["width"] > 0 and image["height"] > 0, image
    assert found["resources"] == [], "the page fetched resources"
    assert found["violations"] == [], "the page tried to load something from outside itself"
    # every table links its LaTeX and CSV, every figure its SVG/PDF/PNG; each file exists
    files = [link for link in found["links"] if not link.startswith("#")]
    assert sum(link.endswith(".tex") for link in files) == found["tables"] > 5
    assert sum(link.endswith(".csv") for link in files) == found["tables"]
    assert sum(link.endswith(".svg") for link in files) == 8
    assert sum(link.endswith(".pdf") for link in files) == 8
    for link in files:
        assert (report_html.parent / link).is_file(), link
    latex = next(link for link in files if link.endswith("headline.tex"))
    assert "\\toprule" in (report_html.parent / latex).read_text()


def test_a_link_to_a_figure_screenshots_that_figure(report_html, tmp_path):
    """Headless Chromium drew a blank page for report.html#fig-... when the viewport scrolled;
    the page scrolls its body instead, so the figure is what the screenshot shows."""
    from PIL import Image

    shot = tmp_path / "figure.png"
    url = report_html.as_uri() + "#fig-exposure"
    result = _chromium(["--window-size=1280,900", f"--screenshot={shot}", url], tmp_path / "p")
    assert shot.is_file(), result.stderr[-2000:]
    grey = Image.open(shot).convert("L")
    dark = sum(1 for value in grey.get_flattened_data() if value < 128)
    assert dark > 2000, "the screenshot of the linked figure is blank"


def test_report_screenshot_is_kept_as_an_artifact(report_html, tmp_path):
    from PIL import Image

    shot = _keep_screenshot(report_html, "report-screenshot.png", 3000, tmp_path / "profile")
    print(f"report screenshot: {shot}")
    grey = Image.open(shot).convert("L")
    assert grey.size == (1280, 3000)
    dark = sum(1 for value in grey.get_flattened_data() if value < 128)
    assert dark > 2000, "the kept screenshot of the report is blank"


@pytest.fixture(scope="module")
def mitigation_html(tmp_path_factory) -> Path:
    from tests.test_report_mitigation import mitigation_runs

    root = tmp_path_factory.mktemp("browser-mitigation")
    folders = [str(f) for f in mitigation_runs(root)]
    result = CliRunner().invoke(app, ["report", *folders, "--out", str(root / "mitigation")])
    assert result.exit_code == 0, result.output
    return root / "mitigation.html"


def test_mitigation_report_loads_decodes_every_image_and_is_kept_as_a_screenshot(
    mitigation_html, tmp_path
):
    found = _check_in_browser(mitigation_html, tmp_path)
    assert found["runs"] == 5
    alts = [image["alt"] for image in found["images"]]
    assert any("stability vs cost" in alt.lower() for alt in alts), alts
    for image in found["images"]:
        assert image["complete"] and image["opaque"], image
    assert found["resources"] == [] and found["violations"] == []
    shot = _keep_screenshot(
        mitigation_html, "report-mitigation-screenshot.png", 5200, tmp_path / "profile2"
    )
    print(f"mitigation report screenshot: {shot}")
