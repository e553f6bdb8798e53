"""Publishing to the Comfy Registry: pyproject.toml carries everything the Registry and
ComfyUI-Manager show (comfy-cli's `comfy node publish` reads it), its version is the pack's,
and the publish workflow publishes from main with the Registry's own action."""

import re
import tomllib
from pathlib import Path

import pytest

from vrwkv_editor.vrwkv.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REPOSITORY = PYPROJECT["project"]["urls"]["Repository"]


def test_project_metadata_is_complete():
    project = PYPROJECT["project"]
    assert re.fullmatch(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*", project["name"])   # the Registry's node id rules
    assert project["description"].strip() and project["license"] == {"file": "LICENSE"}
    assert (ROOT / "LICENSE").is_file()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY)
    assert project["urls"] == {"Repository": REPOSITORY, "Bug Tracker": f"{REPOSITORY}/issues",
                               "Documentation": f"{REPOSITORY}#readme"}


def test_version_is_the_packs_and_semantic():
    assert PYPROJECT["project"]["version"] == VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION)


def test_registry_section_is_complete():
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["PublisherId"] == REPOSITORY.split("/")[3]
    assert comfy["DisplayName"].strip()
    assert comfy["Icon"] == "" or comfy["Icon"].startswith("https://")
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    assert comfy["includes"] == []


def test_requirements_match_the_declared_dependencies():
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == PYPROJECT["project"]["dependencies"]


def test_publish_workflow_publishes_version_changes_on_main():
    yaml = pytest.importorskip("yaml", reason="PyYAML parses the GitHub workflow (not a pack dependency)")
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text())
    triggers = workflow[True]            # YAML 1.1 reads the key `on` as True
    assert "workflow_dispatch" in triggers
    assert triggers["push"] == {"branches": ["main"], "paths": ["pyproject.toml"]}
    [job] = workflow["jobs"].values()
    assert job["if"] == "${{ github.repository_owner == '" + REPOSITORY.split("/")[3] + "' }}"
    [publish] = [s for s in job["steps"] if s.get("uses", "").startswith("Comfy-Org/publish-node-action@")]
    assert publish["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    assert "steps.version.outputs.changed == 'true'" in publish["if"]
