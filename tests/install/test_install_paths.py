"""The install paths a user has, each from a clean clone into a fresh venv, as a user runs them.

- ``pip install .`` in the clone, and ``pip install "tap-rapid7[s3] @ git+file://<clone>"`` (what
  a ``pip_url`` does): both plugins and every command, ``--about`` under each plugin's own name
  with the distribution's version, ``pip check`` clean;
- ``python -m build``, then the wheel alone: it holds the product's packages only, the sdist
  what a build needs, and every command runs; a real pipeline (the wheel's emulator, tap,
  target, reconcile) gets exactly the emulator's truth;
- a Meltano project of the user's own (``meltano init`` outside the repository), both plugins
  added with ``meltano add --from-ref meltano-hub/...``, ``meltano install``, ``meltano run``
  against the emulator with exact counts, the SDK's settings through the environment
  (``TAP_RAPID7_STREAM_MAPS``) and ``meltano config set`` (an object given as text), and the
  tap's ``reconcile`` command through ``meltano invoke``.

The "clone" is a new git repository of the files git tracks here, as the working tree has them:
what a fresh clone of the next commit holds (an untracked file a build needs would fail here).
Installs resolve from the package index the machine is set up with, without our pins: what a
user gets. Real processes and real installs: marked e2e.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from plugin_io.distribution import DISTRIBUTION, distribution_version
from tests.distribution_sources import REPO, top_level_packages
from tests.e2e.pipeline import dataset_keys
from tests.meltano_cli import MELTANO, requires_meltano

pytestmark = pytest.mark.e2e

COMMANDS = (
    "tap-rapid7",
    "target-parquet-parts",
    "target-parquet-parts-compact",
    "tap-rapid7-emulator",
    "tap-rapid7-reconcile",
    "tap-rapid7-timeline",
    "tap-rapid7-capacity",
)
MINUTE = 60_000
INSTALL_TIMEOUT = 900


def _clean_env() -> dict[str, str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)  # nothing of the dev venv leaks into the user's
    return env


def _run(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env or _clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(str(arg) for arg in args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository of the tracked files as the working tree has them: a clean clone."""
    listed = _run(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0")
    root = tmp_path_factory.mktemp("clone") / "tap-rapid7"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the worktree is not in the next commit
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    _run([*git, "init", "-q", "-b", "main"], cwd=root)
    _run([*git, "add", "-A"], cwd=root)
    _run([*git, "commit", "-q", "-m", "clone"], cwd=root)
    return root


def _fresh_venv(path: Path) -> Path:
    """A new venv (with pip) at ``path``; returns its bin directory."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin"


def _pip_install(bin_dir: Path, *requirements: str | Path, cwd: Path | None = None) -> None:
    _run(
        [bin_dir / "python", "-m", "pip", "install", "-q", *requirements],
        cwd=cwd,
        timeout=INSTALL_TIMEOUT,
    )


def _check_plugins_and_commands(bin_dir: Path) -> None:
    """Both plugins report their own names with the distribution's version; every command
    starts; pip check finds nothing broken."""
    version = distribution_version()
    for plugin in ("tap-rapid7", "target-parquet-parts"):
        about = json.loads(_run([bin_dir / plugin, "--about", "--format=json"]).stdout)
        assert about["name"] == plugin
        assert about["version"] == version != "0+unknown"
    for command in COMMANDS:
        assert (bin_dir / command).exists(), f"{command} not installed"
        _run([bin_dir / command, "--help"])
    assert _run([bin_dir / "python", "-m", "pip", "check"]).returncode == 0


def test_pip_install_dot_in_a_clean_clone(clone, tmp_path):
    bin_dir = _fresh_venv(tmp_path / "venv")
    _pip_install(bin_dir, ".", cwd=clone)
    _check_plugins_and_commands(bin_dir)
    # the base install is what a plain local run needs: no heavy extras came along, and what
    # needs one says which, in one line, without a traceback
    for module in ("boto3", "pyiceberg", "matplotlib"):
        assert _run([bin_dir / "python", "-c", f"import {module}"], check=False).returncode
    iceberg = tmp_path / "iceberg.json"
    iceberg.write_text(
        json.dumps({"output_dir": str(tmp_path / "lake"), "table_format": "iceberg"})
    )
    s3 = tmp_path / "s3.json"
    s3.write_text(json.dumps({"output_dir": "s3://bucket/lake"}))
    for command, extra in (
        ([bin_dir / "target-parquet-parts-compact", "--config", iceberg], "iceberg"),
        ([bin_dir / "target-parquet-parts", "--config", iceberg], "iceberg"),
        ([bin_dir / "target-parquet-parts", "--config", s3], "s3"),
    ):
        refused = _run(command, check=False)
        assert refused.returncode != 0
        assert f"pip install '{DISTRIBUTION}[{extra}]'" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_pip_install_from_a_git_url_then_with_an_extra(clone, tmp_path):
    """What a Meltano ``pip_url`` does: the repository's git URL, then a direct reference with
    an extra (the form meltano-hub/ uses; pip 23.2, which Python 3.11.7's venv brings, refuses
    a git+file URL in that form, a current pip takes it)."""
    bin_dir = _fresh_venv(tmp_path / "venv")
    _pip_install(bin_dir, f"git+file://{clone}")
    _check_plugins_and_commands(bin_dir)
    _pip_install(bin_dir, "--upgrade", "pip")
    _pip_install(bin_dir, f"{DISTRIBUTION}[s3] @ git+file://{clone}")
    _run([bin_dir / "python", "-c", "import boto3"])  # the s3 extra came along
    assert _run([bin_dir / "python", "-m", "pip", "check"]).returncode == 0


@pytest.fixture(scope="module")
def built(clone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel ``python -m build`` makes of the clone."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, clone], timeout=INSTALL_TIMEOUT)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def test_the_wheel_holds_the_product_packages_and_the_sdist_what_a_build_needs(built):
    sdist, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    packages = set(top_level_packages())
    assert packages == {"tap_rapid7", "target_parquet_parts", "logsearch_emulator"} | {
        "pipeline_tools",
        "plugin_io",
    }
    assert {top for top in tops if not top.endswith(".dist-info")} == packages
    assert all(f"{command} = " in scripts for command in COMMANDS)
    assert "pytest11" not in scripts  # no fixtures pushed into the users' own test runs
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "tap_rapid7/tap.py"} <= names
    assert not any(name.startswith(("tests/", "benchmarks/")) for name in names)


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat()


@pytest.fixture
def wheel_emulator(built: tuple[Path, Path], tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The wheel alone in a fresh venv, and its own emulator running (any free port)."""
    bin_dir = _fresh_venv(tmp_path / "venv")
    _pip_install(bin_dir, built[1])
    proc = subprocess.Popen(
        [bin_dir / "tap-rapid7-emulator", "--port", "0", "--api-key", "k", "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "tap-rapid7-emulator listening on http://...": ready
        assert "listening on http://127.0.0.1:" in line, line
        yield bin_dir, line.split("listening on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_the_wheel_alone_runs_every_tool_and_a_pipeline_exactly(wheel_emulator, tmp_path):
    bin_dir, base_url = wheel_emulator
    _check_plugins_and_commands(bin_dir)
    end = (int(time.time() * 1000) // MINUTE - 2) * MINUTE
    start = end - 5 * MINUTE
    tap_config = tmp_path / "tap.json"
    tap_config.write_text(
        json.dumps(
            {
                "api_key": "k",
                "base_url": base_url,
                "start_date": _iso(start),
                "end_date": _iso(end),
                "poll_interval_seconds": 0.01,
                "poll_interval_max_seconds": 0.05,
            }
        )
    )
    dataset = tmp_path / "dataset"
    target_config = tmp_path / "target.json"
    target_config.write_text(json.dumps({"output_dir": str(dataset)}))
    _pipe(
        [bin_dir / "tap-rapid7", "--config", tap_config],
        [bin_dir / "target-parquet-parts", "--config", target_config],
        tmp_path,
    )
    truth = _truth(base_url, start, end)
    keys = dataset_keys(dataset)
    assert sorted(keys) == sorted(truth)
    assert len(keys) > 100
    reconcile = _run(
        [
            bin_dir / "tap-rapid7-reconcile",
            "--config",
            tap_config,
            "--dataset",
            dataset,
            "--from",
            str(start),
            "--to",
            str(end),
            "--json",
        ]
    )
    assert json.loads(reconcile.stdout)["totals"]["api_count"] == len(truth)


def _pipe(tap: Sequence[str | Path], target: Sequence[str | Path], logs: Path) -> None:
    """``tap | target``, each logging to a file under ``logs``; both must exit 0."""
    with (logs / "tap.log").open("wb") as tap_log, (logs / "target.log").open("wb") as out:
        producer = subprocess.Popen(
            [str(arg) for arg in tap], stdout=subprocess.PIPE, stderr=tap_log, env=_clean_env()
        )
        assert producer.stdout is not None
        try:
            consumer = subprocess.run(
                [str(arg) for arg in target],
                stdin=producer.stdout,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                timeout=300,
                check=False,
            )
        finally:
            producer.stdout.close()
            tap_code = producer.wait(timeout=300)
    assert tap_code == 0, (logs / "tap.log").read_text()[-3000:]
    assert consumer.returncode == 0, (logs / "target.log").read_text()[-3000:]


def _truth(base_url: str, start: int, end: int) -> list[tuple[str, int, str]]:
    """The emulator's exact answer for [start, end), from its truth endpoint."""
    import urllib.request

    url = f"{base_url}/_emulator/truth?from={start}&to={end}"
    with urllib.request.urlopen(url, timeout=60) as response:
        body = json.load(response)
    assert body["count"] == len(body["keys"])
    return [tuple(key) for key in body["keys"]]


@requires_meltano
def test_a_users_own_meltano_project_adds_installs_and_runs_both_plugins(
    clone, emulator_factory, tmp_path
):
    emu = emulator_factory(events_per_second=1.0, polls_before_ready=1)
    end = (int(time.time() * 1000) // MINUTE - 2) * MINUTE
    start = end - 5 * MINUTE
    dataset = tmp_path / "dataset"
    env = {
        **_clean_env(),
        "MELTANO_CLI_DISABLE_VERSION_CHECK": "true",
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        # where pip gets the distribution (the definitions' pip_url names this variable)
        "TAP_RAPID7_SOURCE": f"git+file://{clone}",
    }
    _run([MELTANO, "init", "--no-usage-stats", "project"], cwd=tmp_path, env=env)
    project = tmp_path / "project"
    for kind, plugin in (("extractor", "tap-rapid7"), ("loader", "target-parquet-parts")):
        definition = clone / "meltano-hub" / f"{plugin}.yml"
        _run(
            [MELTANO, "add", "--from-ref", definition, "--plugin-type", kind, plugin],
            cwd=project,
            env=env,
            timeout=INSTALL_TIMEOUT,
        )
    _run([MELTANO, "install"], cwd=project, env=env, timeout=INSTALL_TIMEOUT)
    # An object setting given as text through `meltano config set` (the target drops the
    # logsets stream), and one through the environment (the tap drops logs): both reach the
    # plugins only because the definitions declare the SDK's settings with kind object.
    _run(
        [MELTANO, "config", "set", "target-parquet-parts", "stream_maps", '{"logsets": null}'],
        cwd=project,
        env=env,
    )
    run_env = {
        **env,
        "TAP_RAPID7_API_KEY": emu.api_key,
        "TAP_RAPID7_BASE_URL": emu.base_url,
        "TAP_RAPID7_START_DATE": _iso(start),
        "TAP_RAPID7_END_DATE": _iso(end),
        "TAP_RAPID7_POLL_INTERVAL_SECONDS": "0.01",  # numbers as text, as Meltano passes them
        "TAP_RAPID7_POLL_INTERVAL_MAX_SECONDS": "0.05",
        "TAP_RAPID7_STREAM_MAPS": '{"logs": null, "labels": null}',
        "TARGET_PARQUET_PARTS_OUTPUT_DIR": str(dataset),
    }
    _run([MELTANO, "run", "tap-rapid7", "target-parquet-parts"], cwd=project, env=run_env)
    truth = emu.truth(start, end)
    assert sorted(dataset_keys(dataset)) == sorted(truth)
    assert len(truth) > 100
    streams = sorted(path.name for path in dataset.iterdir() if not path.name.startswith("_"))
    assert streams == ["events"]  # logs, labels dropped by the tap's map, logsets by the target's

    state = json.loads(
        _run(
            [MELTANO, "state", "get", "dev:tap-rapid7-to-target-parquet-parts"],
            cwd=project,
            env=run_env,
        ).stdout
    )
    partitions = state["singer_state"]["bookmarks"]["events"]["partitions"]
    assert {p["context"]["log_id"]: p["next_from_millis"] for p in partitions} == dict.fromkeys(
        emu.log_ids, end
    )
    invoked = _run(
        [
            MELTANO,
            "invoke",
            "tap-rapid7:reconcile",
            "--dataset",
            dataset,
            "--from",
            str(start),
            "--to",
            str(end),
            "--json",
        ],
        cwd=project,
        env=run_env,
    )
    assert json.loads(invoked.stdout)["totals"]["api_count"] == len(truth)
    # the project is the user's: nothing of this repository's meltano.yml came along
    added = yaml.safe_load((project / "meltano.yml").read_text(encoding="utf-8"))
    assert [p["name"] for p in added["plugins"]["extractors"]] == ["tap-rapid7"]
