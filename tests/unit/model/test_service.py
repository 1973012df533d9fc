"""Service definitions: quantities, providers, paths, filters and cross-field checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from conveyor.model.kinds import normalize_provider
from conveyor.model.service import (
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    Environment,
    Service,
    StorageIO,
    parse_cpu,
    parse_memory,
)


def make_service(**fields: Any) -> Service:
    """A valid service with `fields` overriding the minimal definition."""
    data: dict[str, Any] = {"name": "grayify", "image": "ghcr.io/grycap/imagemagick", "script": "echo hi\n"}
    data.update(fields)
    return Service.model_validate(data)


def io(path: str, provider: str = "minio.default", **filters: Any) -> StorageIO:
    return StorageIO(storage_provider=provider, path=path, **filters)


# ---- parse_memory ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("256Mi", 256 * 2**20),
        ("1Gi", 2**30),
        ("512M", 512 * 10**6),
        ("1.5Gi", int(1.5 * 2**30)),
        ("1073741824", 1073741824),
        (" 256Mi ", 256 * 2**20),
        ("1k", 1000),
        ("2Ti", 2 * 2**40),
    ],
)
def test_parse_memory_reads_kubernetes_quantities(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["1Gx", "abc", "-1", "", "Mi", "1 Gi"])
def test_parse_memory_rejects_malformed_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="is not a memory quantity"):
        parse_memory(text)


def test_parse_memory_reads_kibibytes() -> None:
    # Kubernetes spells the binary kilo "Ki" (capital K), unlike the decimal "k"
    assert parse_memory("2Ki") == 2048


def test_parse_memory_rejects_lower_case_ki_with_a_value_error() -> None:
    # "ki" is no Kubernetes unit; it must be a ValueError (pydantic turns only those into 422s)
    with pytest.raises(ValueError, match="is not a memory quantity"):
        parse_memory("2ki")


def test_service_with_lower_case_ki_memory_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        make_service(memory="512ki")


def test_parse_memory_hints_at_binary_unit_for_lower_case_suffix() -> None:
    with pytest.raises(ValueError, match=r"did you mean 512Mi\?"):
        parse_memory("512m")


def test_parse_memory_gives_no_hint_when_nothing_close_was_meant() -> None:
    with pytest.raises(ValueError) as caught:
        parse_memory("1Gx")
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize("text", ["0", "0Mi", "0.0Gi"])
def test_parse_memory_rejects_zero(text: str) -> None:
    with pytest.raises(ValueError, match="more than zero bytes"):
        parse_memory(text)


# ---- parse_cpu ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0.2", 0.2), (1, 1.0), ("2", 2.0), ("500m", 0.5), (".5", 0.5), (1.5, 1.5)],
)
def test_parse_cpu_reads_cores_and_millicores(value: str | float, expected: float) -> None:
    assert parse_cpu(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["abc", "1.5x", "-1", "", "m"])
def test_parse_cpu_rejects_malformed_quantities(value: str) -> None:
    with pytest.raises(ValueError, match="is not a CPU quantity"):
        parse_cpu(value)


@pytest.mark.parametrize("value", ["0", "0m", 0])
def test_parse_cpu_rejects_zero(value: str | int) -> None:
    with pytest.raises(ValueError, match="more than zero cores"):
        parse_cpu(value)


# ---- normalize_provider ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("minio", "minio.default"),
        ("minio.default", "minio.default"),
        ("s3.x", "s3.x"),
        ("s3", "s3.default"),
        ("webdav.dcache", "webdav.dcache"),
        ("", "minio.default"),
        (" onedata.home ", "onedata.home"),
    ],
)
def test_normalize_provider(value: str, expected: str) -> None:
    assert normalize_provider(value) == expected


def test_normalize_provider_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown storage provider kind 'ftp'"):
        normalize_provider("ftp.mine")


# ---- StorageIO ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("/bucket/in/", "bucket/in"), (" bucket/in ", "bucket/in"), ("//bucket//", "bucket"), ("bkt/x/y", "bkt/x/y")],
)
def test_storage_io_trims_spaces_and_slashes(raw: str, expected: str) -> None:
    assert StorageIO(path=raw).path == expected


@pytest.mark.parametrize("raw", ["", " / ", "/", None])
def test_storage_io_rejects_empty_path(raw: str | None) -> None:
    with pytest.raises(ValidationError, match="must not be empty"):
        StorageIO(path=raw)


@pytest.mark.parametrize("raw", ["bucket/../etc", "bucket/./in", "bucket//in", ".."])
def test_storage_io_rejects_dot_and_empty_segments(raw: str) -> None:
    with pytest.raises(ValidationError, match="segment"):
        StorageIO(path=raw)


@pytest.mark.parametrize("raw", ["ab/in", "Photos/in", "my_bucket/in", "-abc/in", "abc-/in", "a" * 64 + "/in"])
@pytest.mark.parametrize("provider", ["minio.default", "s3.mine"])
def test_storage_io_rejects_invalid_s3_bucket_names(raw: str, provider: str) -> None:
    with pytest.raises(ValidationError, match="not a valid S3 bucket name"):
        StorageIO(path=raw, storage_provider=provider)


@pytest.mark.parametrize("raw", ["abc/in", "my.bucket-2/in", "a" * 63 + "/in"])
def test_storage_io_accepts_valid_s3_bucket_names(raw: str) -> None:
    assert StorageIO(path=raw).bucket == raw.split("/")[0]


def test_storage_io_bucket_rule_is_only_for_s3_kinds() -> None:
    assert StorageIO(path="My_Space/in", storage_provider="onedata.x").bucket == "My_Space"


def test_service_bare_path_of_a_short_named_service_gives_an_invalid_bucket() -> None:
    # "ab" is a valid service name, but "ab" as the bucket of "in" breaks the S3 bucket rule
    with pytest.raises(ValidationError, match="too short for a bucket name"):
        make_service(name="ab", input=[{"path": "in"}])


def test_storage_io_defaults_and_normalises_provider() -> None:
    assert StorageIO(path="bkt").storage_provider == "minio.default"
    assert StorageIO(path="bkt", storage_provider=None).storage_provider == "minio.default"
    assert StorageIO(path="bkt", storage_provider="s3").storage_provider == "s3.default"
    with pytest.raises(ValidationError, match="unknown storage provider kind"):
        StorageIO(path="bkt", storage_provider="gcs.x")


def test_storage_io_bucket_folder_and_kind() -> None:
    nested = io("bucket/a/b", provider="s3.mine")
    assert (nested.kind, nested.bucket, nested.folder) == ("s3", "bucket", "a/b")
    whole = io("bucket")
    assert (whole.bucket, whole.folder) == ("bucket", "")


def test_storage_io_key_for_puts_names_under_the_folder() -> None:
    assert io("bucket/out").key_for("x/y.png") == "out/x/y.png"
    assert io("bucket").key_for("y.png") == "y.png"


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("bkt/in", "in/x.jpg", True),
        ("bkt/in", "in/sub/x.jpg", True),
        ("bkt/in", "inx/y.jpg", False),
        ("bkt/in", "in", False),
        ("bkt/in", "in/folder/", False),
        ("bkt", "anything/at/all", True),
        ("bkt", "top.txt", True),
        ("bkt", "folder/", False),
    ],
)
def test_storage_io_contains_key(path: str, key: str, expected: bool) -> None:
    assert io(path).contains_key(key) is expected


def test_storage_io_single_string_filters_become_lists() -> None:
    output = StorageIO(path="bkt", prefix="result-", suffix=None)
    assert output.prefix == ["result-"]
    assert output.suffix == []


@pytest.mark.parametrize(
    ("prefix", "suffix", "name", "expected"),
    [
        ([], [], "anything.bin", True),
        (["result-"], [], "result-1.png", True),
        (["result-"], [], "other.png", False),
        (["result-"], [], "sub/result-x.png", False),
        ([], [".png", ".jpg"], "a.jpg", True),
        ([], [".png", ".jpg"], "a.gif", False),
        (["a", "b"], [".png"], "b1.png", True),
        (["a", "b"], [".png"], "b1.jpg", False),
        (["a", "b"], [".png"], "c1.png", False),
        (["sub/"], [".txt"], "sub/deep.txt", True),
    ],
)
def test_storage_io_accepts_any_prefix_and_any_suffix(
    prefix: list[str], suffix: list[str], name: str, expected: bool
) -> None:
    assert io("bkt/out", prefix=prefix, suffix=suffix).accepts(name) is expected


@pytest.mark.parametrize(
    ("inner", "outer", "expected"),
    [
        (("bkt/in", "minio.default"), ("bkt/in", "minio.default"), True),
        (("bkt/in/out", "minio.default"), ("bkt/in", "minio.default"), True),
        (("bkt/in", "minio.default"), ("bkt", "minio.default"), True),
        (("bkt/inx", "minio.default"), ("bkt/in", "minio.default"), False),
        (("bkt/in", "minio.default"), ("bkt/in/out", "minio.default"), False),
        (("bkt/in", "s3.other"), ("bkt/in", "minio.default"), False),
    ],
)
def test_storage_io_is_within(inner: tuple[str, str], outer: tuple[str, str], expected: bool) -> None:
    assert io(*inner).is_within(io(*outer)) is expected


# ---- Environment ----------------------------------------------------------------------------


def test_environment_keys_match_in_any_case() -> None:
    env = Environment.model_validate({"Variables": {"A": "1"}, "SECRETS": {"S": "x"}})
    assert env.variables == {"A": "1"}
    assert env.secrets == {"S": "x"}


def test_environment_values_become_strings_and_none_becomes_empty() -> None:
    env = Environment.model_validate({"variables": {"N": 3, "B": True, "E": None}, "secrets": None})
    assert env.variables == {"N": "3", "B": "True", "E": ""}
    assert env.secrets == {}


def test_environment_rejects_a_list_of_variables() -> None:
    with pytest.raises(ValidationError, match="mapping"):
        Environment.model_validate({"variables": ["A=1"]})


# ---- Service --------------------------------------------------------------------------------


def test_service_defaults() -> None:
    service = make_service()
    assert service.memory == DEFAULT_MEMORY == "256Mi"
    assert service.cpu == DEFAULT_CPU == "0.2"
    assert service.memory_bytes == 256 * 2**20
    assert service.cpu_cores == pytest.approx(0.2)
    assert service.log_level == "INFO"
    assert service.timeout == 3600
    assert service.input == [] and service.output == []
    assert service.environment.variables == {} and service.environment.secrets == {}


def test_service_empty_or_null_values_fall_back_to_defaults() -> None:
    service = make_service(memory="", cpu=None, environment=None, input=None, output=None, storage_providers=None)
    assert (service.memory, service.cpu) == ("256Mi", "0.2")
    assert service.input == [] and service.storage_providers == {}


def test_service_accepts_numeric_cpu_and_keeps_it_as_text() -> None:
    service = make_service(cpu=1, memory="1Gi")
    assert service.cpu == "1"
    assert service.cpu_cores == 1.0
    assert service.memory_bytes == 2**30


@pytest.mark.parametrize(("field", "value"), [("memory", "512m"), ("memory", "0"), ("cpu", "abc"), ("cpu", "0")])
def test_service_rejects_bad_quantities(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_service(**{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("name", ["a", "grayify", "my-service-2", "0abc", "a" * 39])
def test_service_accepts_valid_names(name: str) -> None:
    assert make_service(name=name).name == name


@pytest.mark.parametrize("name", ["", "Grayify", "-abc", "abc-", "a_b", "a.b", "a b", "a" * 40])
def test_service_rejects_invalid_names(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_service(name=name)
    assert caught.value.errors()[0]["loc"] == ("name",)


@pytest.mark.parametrize("value", ["", "   \n"])
def test_service_requires_an_image(value: str) -> None:
    with pytest.raises(ValidationError, match="is required"):
        make_service(image=value)


def test_a_service_without_a_script_is_accepted_and_apply_says_its_jobs_run_nothing() -> None:
    service = Service.model_validate({"name": "serve", "image": "img", "expose": {"api_port": 80}})

    assert service.script == ""
    assert service.fields_not_acted_on()[0].startswith("serve: has no script: its jobs run nothing")


@pytest.mark.parametrize("field", ["name", "image"])
def test_service_missing_required_field(field: str) -> None:
    data = {"name": "svc", "image": "img", "script": "s"}
    del data[field]
    with pytest.raises(ValidationError):
        Service.model_validate(data)


def test_service_script_crlf_becomes_lf() -> None:
    assert make_service(script="#!/bin/sh\r\necho a\r\necho b\r\n").script == "#!/bin/sh\necho a\necho b\n"


@pytest.mark.parametrize(
    ("level", "expected"), [("debug", "DEBUG"), ("Error", "ERROR"), ("chatty", "INFO"), (None, "INFO")]
)
def test_service_log_level_normalised(level: str | None, expected: str) -> None:
    assert make_service(log_level=level).log_level == expected


@pytest.mark.parametrize("timeout", [0, -5])
def test_service_timeout_must_be_positive(timeout: int) -> None:
    with pytest.raises(ValidationError, match="positive"):
        make_service(timeout=timeout)


def test_service_bare_minio_and_s3_paths_go_into_a_bucket_named_after_the_service() -> None:
    service = make_service(
        name="grayify",
        input=[{"storage_provider": "minio", "path": "in"}, {"storage_provider": "s3.mine", "path": "/raw/"}],
        output=[{"storage_provider": "minio.default", "path": "out"}, {"path": "other/out"}],
        storage_providers={"s3": {"mine": {"access_key": "a"}}},
    )
    assert [i.path for i in service.input] == ["grayify/in", "grayify/raw"]
    assert [o.path for o in service.output] == ["grayify/out", "other/out"]


def test_service_bare_paths_of_other_kinds_are_left_alone() -> None:
    service = make_service(output=[{"storage_provider": "webdav.dcache", "path": "results"}])
    assert service.output[0].path == "results"


def test_service_revalidating_a_dump_does_not_prefix_twice() -> None:
    service = make_service(input=[{"path": "in"}])
    again = Service.model_validate(service.model_dump())
    assert again.input[0].path == "grayify/in"


def test_service_unknown_fields_are_kept_as_extras() -> None:
    service = make_service(vo="vo.example.eu", expose={"min_scale": 1}, alpine=False)
    assert service.model_extra == {"vo": "vo.example.eu", "expose": {"min_scale": 1}, "alpine": False}
    dumped = service.model_dump()
    assert dumped["vo"] == "vo.example.eu"
    assert dumped["expose"] == {"min_scale": 1}


def test_service_environment_key_in_any_case() -> None:
    service = make_service(Environment={"Variables": {"MODE": "fast"}, "Secrets": {"KEY": "k"}})
    assert service.environment.variables == {"MODE": "fast"}
    assert service.environment.secrets == {"KEY": "k"}
    assert "Environment" not in (service.model_extra or {})


def test_service_public_blanks_secret_values_but_keeps_names() -> None:
    service = make_service(
        environment={"variables": {"MODE": "fast"}, "secrets": {"API_KEY": "s3cr3t", "OTHER": "x"}},
        storage_providers={
            "s3": {
                "mine": {
                    "access_key": "AKIA",
                    "secret_key": "SECRET",
                    "region": "eu-west-1",
                    "token": "",
                }
            },
            "webdav": {"dcache": {"hostname": "dav.example.org", "login": "me", "password": "pw"}},
        },
    )
    shown = service.public()

    assert shown.environment.secrets == {"API_KEY": "", "OTHER": ""}
    assert shown.environment.variables == {"MODE": "fast"}
    assert shown.storage_providers["s3"]["mine"] == {
        "access_key": "hidden",
        "secret_key": "hidden",
        "region": "eu-west-1",
        "token": "",
    }
    assert shown.storage_providers["webdav"]["dcache"] == {
        "hostname": "dav.example.org",
        "login": "me",
        "password": "hidden",
    }
    assert "s3cr3t" not in shown.model_dump_json()
    assert "SECRET" not in shown.model_dump_json()


def test_service_public_leaves_the_original_untouched() -> None:
    service = make_service(
        environment={"secrets": {"API_KEY": "s3cr3t"}},
        storage_providers={"s3": {"mine": {"secret_key": "SECRET"}}},
    )
    service.public()
    assert service.environment.secrets == {"API_KEY": "s3cr3t"}
    assert service.storage_providers["s3"]["mine"]["secret_key"] == "SECRET"


# ---- batch ----------------------------------------------------------------------------------


def test_batch_is_off_unless_asked_and_defaults_to_each_with_20_files() -> None:
    assert make_service().batch is None
    batch = make_service(batch={}).batch
    assert batch is not None
    assert (batch.max_files, batch.mode) == (20, "each")
    assert make_service(batch={"max_files": 200, "mode": "directory"}).batch.mode == "directory"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("batch", "complaint"),
    [
        ({"mode": "folder"}, "'each' or 'directory'"),
        ({"max_files": 0}, "greater than or equal to 1"),
        ({"max_files": 5000}, "less than or equal to 1000"),
        ({"max_file": 5}, "Extra inputs are not permitted"),
    ],
)
def test_a_wrong_batch_says_what_is_wrong(batch: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        make_service(batch=batch)


def test_oscar_fields_conveyor_keeps_but_does_not_act_on_are_named_once_each() -> None:
    service = Service.model_validate(
        {
            "name": "svc",
            "image": "busybox",
            "script": "true",
            "expose": {"api_port": 8080},
            "visibility": "private",
            "replicas": [],  # empty: nothing to warn about
            "labels": {"team": "a"},
            "something_else": 1,  # not an OSCAR field: kept, not named
        }
    )

    warnings = service.fields_not_acted_on()

    assert [w.split(":")[1].split()[0] for w in warnings] == ["expose", "visibility"], "labels are acted on"
    assert (
        warnings[0]
        == "svc: expose is kept but not acted on: no exposed HTTP endpoint is created; use /run for synchronous calls"
    )
    assert service.model_dump()["expose"] == {"api_port": 8080}, "kept and returned as it came"
    assert service.user_labels == {"team": "a"}
