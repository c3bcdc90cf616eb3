"""The documentation is generated or checked against the code: command reference, config reference,
the compose file, and the module names ARCHITECTURE.md cites."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import msgspec
import pytest

from replicator import config
from replicator.cli import docs
from tests.support.paths import ROOT


def test_command_reference_is_current() -> None:
    assert docs.main(["--check"]) == 0, "run `python -m replicator.cli.docs` and commit docs/commands.md and README.md"


@pytest.mark.parametrize("command", [["analyze"], ["capture", "install"], ["cutover"], ["demo"]])
def test_reference_is_what_help_prints(command: list[str]) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "replicator", *command, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    reference = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    section = reference.split(f"## `replicator {' '.join(command)}`\n\n```text\n", 1)[1].split("\n```", 1)[0]
    assert section == "\n".join(line.rstrip() for line in done.stdout.rstrip().splitlines())


def _fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


def test_every_config_field_is_in_the_example() -> None:
    text = (ROOT / "replicator.example.toml").read_text(encoding="utf-8")
    missing = []
    for section in _fields(config.Config):
        if section == "types":
            if not re.search(r"^#? ?\[types\.", text, flags=re.M):
                missing.append("[types.*]")
            missing += [
                f"types.*.{k}" for k in _fields(config.ColumnOverride) if not re.search(rf"^#? ?{k} =", text, re.M)
            ]
            continue
        if not re.search(rf"^\[{section}\]$", text, flags=re.M):
            missing.append(f"[{section}]")
        struct = type(getattr(config.Config(), section))
        body = text.split(f"[{section}]", 1)[-1].split("\n[", 1)[0]
        missing += [f"{section}.{k}" for k in _fields(struct) if not re.search(rf"^#? ?{k} =", body, flags=re.M)]
    assert missing == [], f"replicator.example.toml lacks {missing}"


def test_example_config_loads_and_states_the_defaults() -> None:
    path = ROOT / "replicator.example.toml"
    tomllib.loads(path.read_text(encoding="utf-8"))
    assert config.load(path, environ={}) == config.Config()


def test_compose_file_has_both_services_with_healthchecks() -> None:
    import yaml

    text = (ROOT / "compose" / "compose.yaml").read_text(encoding="utf-8")
    dockerfile = ROOT / "compose" / "Dockerfile"
    assert dockerfile.is_file()
    assert "pip install ." in dockerfile.read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    services = spec["services"]
    assert set(services) >= {"postgres", "replicator"}
    assert services["postgres"]["image"] == "postgres:16"
    daemon = services["replicator"]
    assert daemon["build"]["dockerfile"] == "compose/Dockerfile"
    assert daemon["command"] == ["replicator", "run"]
    assert daemon["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any(str(v).endswith(":/data") for v in daemon["volumes"])
    assert not any(str(v).endswith(":ro") for v in daemon["volumes"])
    for name in ("postgres", "replicator"):
        assert services[name]["healthcheck"]["test"], name
    assert daemon["healthcheck"]["test"] == ["CMD", "replicator", "status", "--json"]


def test_architecture_cites_modules_that_exist() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`((?:replicator|triggers|checkpoints)(?:\.[a-z_]+)+)`", text))
    assert len(cited) >= 10
    missing = []
    for name in sorted(cited):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # a module, or a module plus an attribute
            if (ROOT.joinpath(*parts[:cut]).with_suffix(".py")).is_file():
                break
        else:
            missing.append(name)
    assert missing == []
