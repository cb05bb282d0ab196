"""What runs stock Beam: the Dataflow launch paths, plain ``--runner=DirectRunner``, ``TestPipeline`` and the
FnApiRunner never import the local runner's adjustments; the installed package submits the job without
``pipeline.local`` or ``pipeline.deploy``.

Each check runs in a fresh interpreter, so what another test imported cannot hide an import here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.deploy.dataflow_graph import DEPLOY_ARGS
from tests.paths import ROOT

LAUNCH = ROOT / "pipeline" / "deploy" / "flex_template" / "launch.py"
REPORT = """
import gc, json, sys
from apache_beam.runners.portability.fn_api_runner import worker_handlers
print(json.dumps({
    "local_modules": sorted(m for m in sys.modules if m.startswith(("pipeline.local", "pipeline.deploy"))),
    "gc_thresholds": list(gc.get_threshold()),
    "state_cache_mb": worker_handlers.STATE_CACHE_SIZE_MB,
}))
"""


def _report(script: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", script + REPORT], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_python_m_pipeline_on_dataflow_imports_no_adjustment() -> None:
    report = _report(f"from pipeline.local import cli\ncli.run({list(DEPLOY_ARGS)!r})\n")
    assert "pipeline.local.cli" in report["local_modules"]  # the command line ran ...
    assert not [m for m in report["local_modules"] if m.startswith("pipeline.local.runner.")]  # ... not the runner
    assert "pipeline.local.runner" not in report["local_modules"]  # nor any module inside it
    assert report["gc_thresholds"] == list(gc_defaults()) and report["state_cache_mb"] == 100


@pytest.fixture(scope="module")
def staged_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``--setup_file`` stages on the workers, and the launcher image installs: the sdist of
    setup.py, unpacked; returns the folder that holds its ``pipeline/``."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "setup.py", "--quiet", "sdist", f"--dist-dir={dist}"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(dist, filter="data")
    (unpacked,) = [path for path in dist.iterdir() if path.is_dir()]
    return unpacked


def test_workers_get_the_job_without_local_tools(staged_package: Path) -> None:
    files = {str(path.relative_to(staged_package)) for path in staged_package.rglob("*") if path.is_file()}
    assert "pipeline/graph.py" in files and "pipeline/stages/lifecycle.py" in files
    assert "pipeline/contracts/com.waybill.CourierEvent.avsc" in files
    assert not [f for f in files if f.startswith(("pipeline/local", "pipeline/deploy"))]


def test_the_flex_template_submits_with_the_staged_package_alone(staged_package: Path, tmp_path: Path) -> None:
    argv = [a for a in DEPLOY_ARGS if a != "--streaming"]
    script = f"import runpy, sys\nsys.argv = [{str(LAUNCH)!r}, *{argv!r}]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n"
    env = {**os.environ, "PYTHONPATH": str(staged_package)}
    report = _report(script, cwd=tmp_path, env=env)  # the checkout is not on the path here
    assert report["local_modules"] == []


def test_plain_direct_runner_testpipeline_and_fnapi_runner_run_stock_beam(tmp_path: Path) -> None:
    script = f"""
import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from pipeline.launcher import launch, parse_options
from pipeline.local import cli

accounting = cli.run(["--runner=DirectRunner", "--events=200", "--day=2026-11-21", "--output_dir={tmp_path}"])
assert accounting.balanced and accounting.inputs == 200, accounting
streaming = parse_options(["--runner=BundleBasedDirectRunner", "--streaming", "--events=200", "--output_dir={tmp_path}"])
launch(streaming).wait_until_finish()
with TestPipeline() as p:
    assert_that(p | beam.Create([1, 2]) | beam.Map(lambda n: n * 2), equal_to([2, 4]))
with beam.Pipeline(runner="FnApiRunner") as p:
    assert_that(p | beam.Create([("a", 1), ("a", 2)]) | beam.CombinePerKey(sum), equal_to([("a", 3)]))
"""
    report = _report(script)
    assert "pipeline.local.runner" not in report["local_modules"]  # nor any module inside it
    assert report["gc_thresholds"] == list(gc_defaults()) and report["state_cache_mb"] == 100


def gc_defaults() -> tuple[int, int, int]:
    """CPython's collection thresholds in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", "import gc; print(*gc.get_threshold())"], capture_output=True,
                          text=True, check=True)
    young, middle, old = map(int, done.stdout.split())
    return young, middle, old
