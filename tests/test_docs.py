"""The README documents every setting exactly as the settings class defines it."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented_as_flag_and_environment_variable():
    for name, field in Settings.model_fields.items():
        flag, env = f"`--{name.replace('_', '-')}`", f"`REWARD_{name.upper()}`"
        row = next((line for line in README.splitlines() if line.startswith(f"| {flag} | {env} |")), None)
        assert row is not None, f"{flag} / {env} missing from the README's configuration table"
        assert field.description and field.description in row, f"{flag}: README text differs from Settings"


def test_the_readme_gives_the_two_commands_ci_runs():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "make serve" in README and "make test" in README
    assert ci.strip().splitlines()[-1] == "make test"
