"""The tests' own machinery: commands forked by tests/launch.py behave as the commands users type, and
pytest-xdist keeps the tests that share a costly fixture on one worker."""

from __future__ import annotations

import json
import sys

import pytest

from tests import launch


@pytest.mark.xdist_group("grouping_check")
def test_xdist_groups_the_tests_that_share_a_fixture(request):
    if getattr(request.config.option, "loadgroup", False):  # --dist loadgroup, as pyproject's addopts ask
        assert request.node.nodeid.endswith("@grouping_check"), (
            "pytest-xdist did not tag this test with its group, so each worker would build the shared fixtures "
            "again: use the pytest and pytest-xdist versions pyproject.toml allows")


def test_a_forked_command_runs_in_its_folder_with_its_arguments_and_exit_status(tmp_path):
    shown = launch.run([sys.executable, "-m", "voc_dl.train", "experiment=segmentation", "--cfg", "job", "--resolve"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    assert f"root_dir: {tmp_path}" in shown.stdout and "_target_: voc_dl.tasks.segmentation." in shown.stdout
    refused = launch.run([sys.executable, "-m", "voc_dl.train", "model.code_size=1000"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr == "voc-dl: error: model.code_size=1000 is not allowed; allowed: 2048, 4096, 8192\n"
    # recorded as a failed run, under the folder it ran in
    records = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/runs/*/*/metrics.json")]
    assert [r["status"] for r in records] == ["failed"]
