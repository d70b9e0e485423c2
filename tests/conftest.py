"""Shared fixtures: a real appliance subprocess, fresh buckets, test data.

    appliance            module-scoped running `appliance up` (see helpers.Appliance)
    appliance_factory    function-scoped: start extra/private appliances (stopped at teardown)
    make_bucket          function-scoped factory: make_bucket() -> new unique bucket name
    bucket               one fresh bucket on `appliance`
    big_file             session-scoped 100 MiB random file: (path, sha256)

Environment knobs: APPLIANCE_BIN (the appliance executable, default .venv/bin/appliance),
APPLIANCE_TEST_KEEP=1 (keep data directories of passed modules; logs are always kept under
pytest's basetemp).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import helpers  # noqa: E402
from helpers import MiB, Appliance, ApplianceError  # noqa: E402
from appliance.node import metrics_dir  # noqa: E402


def pytest_configure(config):
    # boto3 inside this process must not read ~/.aws or AWS_* variables of whoever runs the
    # tests (profile, endpoint, checksum settings, CA bundle...). Subprocesses get explicit
    # environments from helpers.clean_env() / Appliance.env().
    config._aws_isolated_dir = Path(tempfile.mkdtemp(prefix="appliance-tests-aws-"))
    helpers.isolate_process_env(config._aws_isolated_dir)


def pytest_report_header(config):
    try:
        import boto3
        import botocore

        modern = f"boto3 {boto3.__version__} (botocore {botocore.__version__})"
    except ImportError:
        modern = "boto3 missing"
    legacy = "present" if (helpers.LEGACY_BOTO3_DIR / "boto3").is_dir() else "MISSING (run dev/setup)"
    tools = ", ".join(
        f"{name}={helpers.find_tool(name, f'/usr/bin/{name}') or 'MISSING'}"
        for name in ("aws", "s3cmd", "rclone", "s3fs", "curl")
    )
    return [
        f"appliance: {helpers.appliance_bin()}",
        f"clients: {modern}; legacy boto3 {legacy}; {tools}",
    ]


def pytest_unconfigure(config):
    d = getattr(config, "_aws_isolated_dir", None)
    if d is not None:
        shutil.rmtree(d, ignore_errors=True)


def _start(root: Path, retries: int = 3, **kwargs) -> Appliance:
    """Start an appliance on a free port, retrying with another port if it was taken."""
    last = None
    for _ in range(retries):
        app = Appliance(root, **kwargs)
        try:
            return app.start()
        except ApplianceError as e:
            last = e
            if "Address already in use" not in str(e) and "Errno 98" not in str(e):
                break
    pytest.fail(f"could not start the appliance in {root}:\n{last}", pytrace=False)


def _teardown(app: Appliance, keep: bool) -> None:
    try:
        app.stop()
    except ApplianceError:
        pass
    # A node removes its in-memory metrics files when it stops; not when a test killed it.
    shutil.rmtree(metrics_dir(app.data_dir, 0).parent, ignore_errors=True)
    if not keep and not os.environ.get("APPLIANCE_TEST_KEEP"):
        shutil.rmtree(app.data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def appliance(request, tmp_path_factory):
    """A running single-node appliance shared by the tests of one module."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    app = _start(tmp_path_factory.mktemp(f"appliance-{name}"))
    failed_before = request.session.testsfailed
    yield app
    _teardown(app, keep=request.session.testsfailed > failed_before)


@pytest.fixture
def appliance_factory(request, tmp_path_factory):
    """Start private appliances: `app = appliance_factory()`; all stopped at teardown."""
    started = []

    def factory(**kwargs) -> Appliance:
        app = _start(tmp_path_factory.mktemp(f"appliance-{request.node.name[:40]}"), **kwargs)
        started.append(app)
        return app

    failed_before = request.session.testsfailed
    yield factory
    for app in started:
        _teardown(app, keep=request.session.testsfailed > failed_before)


@pytest.fixture
def make_bucket(request):
    """Factory for fresh, uniquely named buckets (created with boto3, emptied and removed at
    teardown when the appliance is still up): make_bucket(app=None, prefix=None) -> name."""
    made = []

    def factory(app: Appliance | None = None, prefix: str | None = None) -> str:
        if app is None:
            app = request.getfixturevalue("appliance")
        client = app.boto3_client()
        name = helpers.unique_bucket_name(prefix or request.node.name)
        client.create_bucket(Bucket=name)
        made.append((app, name))
        return name

    yield factory
    for app, name in made:
        if not app.running:
            continue
        try:
            helpers.delete_bucket(app.boto3_client(), name)
        except Exception:
            pass  # best effort: the test may have deleted it, or the gateway is broken


@pytest.fixture
def bucket(make_bucket) -> str:
    return make_bucket()


@pytest.fixture(scope="session")
def big_file(tmp_path_factory) -> tuple[Path, str]:
    """100 MiB of random bytes (multipart territory for every client): (path, sha256)."""
    path = tmp_path_factory.mktemp("big") / "big-100MiB.bin"
    digest = helpers.write_random_file(path, 100 * MiB)
    return path, digest
