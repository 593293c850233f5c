"""REPORT.html in a real headless Chromium: the page renders, its script runs without errors, the
verdict table comes first, figures are inline and the tables sort when a header is clicked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.synth import matrix, write_run
from kvbench.report.build import build_report

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]
# Appended to a copy of the page: sort the first verdict table by its peak column (descending:
# two clicks), then record the scenario order where --dump-dom shows it.
CLICK_SCRIPT = """<script>
var t = document.querySelector("table.verdict");
var th = t.querySelectorAll("thead th")[1];
th.click(); th.click();
document.body.setAttribute("data-sorted",
  Array.prototype.map.call(t.tBodies[0].rows, function (r) { return r.cells[0].textContent; }).join("|"));
</script></body>"""


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/bootstrap.sh (Debian package chromium)")
    return path


def _dump_dom(page: Path, profile: Path) -> tuple[str, str]:
    done = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    cells = matrix(
        ["Qwen/Qwen3-8B"],
        ["no-offload", "native-offload", "lmcache-local"],
        [4],
        3,
        no_offload=dict(noise_sd=0.01),
        native_offload=dict(noise_sd=0.01, throughput_factor=1.3),
        lmcache_local=dict(noise_sd=0.01, throughput_factor=0.7),
    )
    run_dir = write_run(tmp_path_factory.mktemp("run"), cells)
    return build_report(run_dir, ["md", "png", "html"])


def test_report_renders_in_chromium_with_the_verdict_table_first(report_dir, tmp_path):
    dom, log = _dump_dom(report_dir / "REPORT.html", tmp_path / "profile")
    assert 'data-report-ready="1"' in dom  # the page's script ran to its end
    assert "Uncaught" not in log, log[-2000:]
    first_table = dom.index("<table")
    assert dom[first_table:].startswith('<table class="verdict"')
    assert dom.index("<h2") < first_table < dom.index('id="validity-checks"')
    assert "Recommended configuration: native-offload" in re.sub(r"<[^>]+>", "", dom)
    assert dom.count('src="data:image/png;base64,') >= 5 and 'src="peak_' not in dom


def test_clicking_a_header_sorts_the_table(report_dir, tmp_path):
    page = tmp_path / "clicked.html"
    page.write_text((report_dir / "REPORT.html").read_text().replace("</body>", CLICK_SCRIPT))
    dom, log = _dump_dom(page, tmp_path / "profile")
    assert "Uncaught" not in log, log[-2000:]
    order = re.search(r'data-sorted="([^"]*)"', dom).group(1).split("|")
    assert order == ["native-offload", "no-offload (baseline)", "lmcache-local"]
