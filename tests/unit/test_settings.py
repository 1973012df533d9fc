"""Settings: defaults, environment, the TOML file and explicit arguments, highest first."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from conveyor.settings import Settings, config_file, default_data_dir


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CONVEYOR_* variables, no config file, XDG dirs inside tmp_path."""
    import os

    for name in list(os.environ):
        if name.startswith("CONVEYOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("CONVEYOR_CONFIG", str(tmp_path / "absent.toml"))
    return monkeypatch


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conveyor.toml"
    path.write_text(text)
    monkeypatch.setenv("CONVEYOR_CONFIG", str(path))
    return path


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings()
    assert settings.data_dir == tmp_path / "home" / ".local" / "share" / "conveyor"
    assert settings.api.host == "127.0.0.1"
    assert settings.api.port == 8080
    assert settings.api.public_url is None
    assert settings.storage.s3_port == 8333
    assert settings.storage.region == "us-east-1"
    assert settings.local.runtime == "auto"
    assert settings.local.max_jobs == 64
    assert settings.admin_user == "conveyor"
    assert settings.admin_password is None
    assert settings.ledger_url is None
    assert settings.resolved_ledger_url == f"sqlite:///{settings.data_dir / 'conveyor.db'}"


def test_data_dir_under_xdg_data_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    assert default_data_dir() == tmp_path / "xdg-data" / "conveyor"
    assert Settings().data_dir == tmp_path / "xdg-data" / "conveyor"


def test_empty_xdg_data_home_falls_back_to_home(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("XDG_DATA_HOME", "")
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "conveyor"


def test_config_file_location(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config_file() == tmp_path / "absent.toml"
    clean_env.delenv("CONVEYOR_CONFIG")
    assert config_file() == tmp_path / "home" / ".config" / "conveyor" / "conveyor.toml"
    clean_env.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    assert config_file() == tmp_path / "xdg-config" / "conveyor" / "conveyor.toml"


def test_environment_overrides_with_nested_keys(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CONVEYOR_API__PORT", "9090")
    clean_env.setenv("CONVEYOR_API__HOST", "0.0.0.0")
    clean_env.setenv("CONVEYOR_LOCAL__RUNTIME", "process")
    clean_env.setenv("CONVEYOR_LOCAL__MAX_JOBS", "4")
    clean_env.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))
    clean_env.setenv("CONVEYOR_LEDGER_URL", "postgresql://db/conveyor")

    settings = Settings()

    assert (settings.api.port, settings.api.host) == (9090, "0.0.0.0")
    assert (settings.local.runtime, settings.local.max_jobs) == ("process", 4)
    assert settings.data_dir == tmp_path / "data"
    assert settings.resolved_ledger_url == "postgresql://db/conveyor"
    assert settings.storage.s3_port == 8333  # untouched siblings keep their defaults


def test_environment_values_are_validated(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVEYOR_API__PORT", "70000")
    with pytest.raises(ValidationError):
        Settings()


def test_unknown_environment_variables_are_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CONVEYOR_NO_SUCH_SETTING", "x")
    assert Settings().api.port == 8080


def test_toml_file_from_conveyor_config(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(
        tmp_path,
        f"""
data_dir = "{tmp_path / "from-toml"}"
admin_user = "ops"

[api]
port = 7000
public_url = "https://conveyor.example.org"

[storage]
s3_port = 0

[local]
runtime = "container"
cpus = 2.5
""",
        clean_env,
    )

    settings = Settings()

    assert settings.data_dir == tmp_path / "from-toml"
    assert settings.admin_user == "ops"
    assert (settings.api.port, settings.api.public_url) == (7000, "https://conveyor.example.org")
    assert settings.api.host == "127.0.0.1"
    assert settings.storage.s3_port == 0
    assert (settings.local.runtime, settings.local.cpus) == ("container", 2.5)


def test_environment_beats_the_toml_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, "admin_user = 'ops'\n[api]\nport = 7000\nhost = '10.0.0.1'\n", clean_env)
    clean_env.setenv("CONVEYOR_API__PORT", "9090")
    settings = Settings()
    assert settings.api.port == 9090
    assert settings.api.host == "10.0.0.1"
    assert settings.admin_user == "ops"


def test_init_arguments_beat_environment_and_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_config(tmp_path, "admin_user = 'ops'\n[api]\nport = 7000\n", clean_env)
    clean_env.setenv("CONVEYOR_API__PORT", "9090")
    clean_env.setenv("CONVEYOR_ADMIN_USER", "env-user")

    settings = Settings(api={"port": 1234}, admin_user="cli-user")

    assert settings.api.port == 1234
    assert settings.admin_user == "cli-user"


def test_relative_data_dir_becomes_absolute(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    settings = Settings(data_dir=Path("rel/data"))
    assert settings.data_dir.is_absolute()
    assert settings.data_dir == tmp_path / "rel" / "data"


def test_tilde_in_data_dir_is_expanded(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings(data_dir=Path("~/conveyor-data"))
    assert settings.data_dir == tmp_path / "home" / "conveyor-data"


@pytest.mark.parametrize(
    "kwargs",
    [{"api": {"port": -1}}, {"local": {"runtime": "kubernetes"}}, {"local": {"max_jobs": 0}}, {"local": {"cpus": 0}}],
)
def test_invalid_values_are_rejected(clean_env: pytest.MonkeyPatch, kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)
