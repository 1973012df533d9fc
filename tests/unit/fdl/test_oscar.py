"""The OSCAR FDL loader: services built from the file, and every problem located at its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conveyor.errors import FDLError, Problem
from conveyor.fdl import Clusters, Workflow, load_fdl, parse_fdl
from conveyor.storage.s3 import S3Credentials

SAMPLES = Path(__file__).parent / "samples"
SCRIPT = "#!/bin/sh\necho hello\n"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path, so FDL paths are relative ("workflow.yaml") as a user would type them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_fdl(text: str, scripts: dict[str, str] | None = None) -> Path:
    """workflow.yaml in the current directory (line 1 = the first line of `text`), plus scripts."""
    for name, content in (scripts if scripts is not None else {"run.sh": SCRIPT}).items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_text(content)
    path = Path("workflow.yaml")
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(FDLError) as caught:
        load_fdl(path)
    return caught.value.problems


def where(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.location, p.field) for p in problems]


# --- Valid workflows ---------------------------------------------------------------------------


def test_example_workflow_loads_both_services_in_file_order() -> None:
    fdl = SAMPLES / "example-workflow" / "workflow.yaml"

    workflow = load_fdl(fdl)

    assert isinstance(workflow, Workflow)
    assert workflow.source == fdl
    assert workflow.warnings == []
    plants, grayify = workflow.services
    assert (plants.name, grayify.name) == ("plants", "grayify")
    assert plants.cluster_id == grayify.cluster_id == "oscar-test"
    # Scripts are read relative to the FDL file, not to the current directory.
    assert plants.script == (fdl.parent / "scripts" / "plants.sh").read_text()
    assert grayify.script.startswith("#!/bin/bash\nFILE_NAME=")
    assert plants.cpu == "1"  # written as the number 1
    assert plants.cpu_cores == 1.0
    assert grayify.cpu == "1.0"
    assert plants.memory_bytes == 2 * 2**30
    assert plants.environment.variables == {"MODEL": "v2"}  # written as `Variables:`
    assert plants.log_level == "CRITICAL"
    assert plants.model_extra == {"visibility": "restricted"}
    assert grayify.input[0].storage_provider == "minio.default"  # written as `minio`
    assert [o.path for o in grayify.output] == ["example-workflow/res", "my-aws-bucket/folder"]
    assert grayify.output[0].suffix == [".jpg", ".png"]


def test_top_level_storage_providers_are_merged_into_every_service_own_entries_winning() -> None:
    plants, grayify = load_fdl(SAMPLES / "example-workflow" / "workflow.yaml").services

    assert plants.storage_providers["s3"]["my_s3"]["region"] == "us-east-1"
    assert plants.storage_providers["webdav"]["dcache"]["hostname"] == "dcache.example.org"
    # grayify declares its own s3.my_s3: it wins; the other shared s3 id is still added.
    assert grayify.storage_providers["s3"]["my_s3"] == {
        "access_key": "OWN_AK",
        "secret_key": "OWN_SK",
        "region": "eu-west-1",
    }
    assert grayify.storage_providers["s3"]["backup"]["region"] == "us-east-2"
    assert set(grayify.storage_providers) == {"s3", "webdav"}


def test_services_get_their_own_copy_of_shared_storage_providers() -> None:
    plants, grayify = load_fdl(SAMPLES / "example-workflow" / "workflow.yaml").services

    plants.storage_providers["webdav"]["dcache"]["login"] = "changed"

    assert grayify.storage_providers["webdav"]["dcache"]["login"] == "user"


def test_crlf_in_the_script_file_becomes_lf(workdir: Path) -> None:
    Path("crlf.sh").write_bytes(b"#!/bin/sh\r\necho one\r\necho two\r\n")
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - local:
              name: crlf
              image: alpine
              script: crlf.sh
        """,
        scripts={},
    )

    [service] = load_fdl(fdl).services

    assert service.script == "#!/bin/sh\necho one\necho two\n"


def test_parse_fdl_reads_scripts_from_base_dir(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text(SCRIPT)
    text = "functions:\n  oscar:\n  - c: {name: svc, image: alpine, script: run.sh, cpu: 0.5}\n"

    workflow = parse_fdl(text, base_dir=tmp_path)

    assert workflow.source == Path("<string>")
    [service] = workflow.services
    assert (service.script, service.cpu, service.cluster_id) == (SCRIPT, "0.5", "c")


def test_parse_fdl_names_source_in_locations(tmp_path: Path) -> None:
    with pytest.raises(FDLError) as caught:
        parse_fdl("functions:\n  oscar: {}\n", base_dir=tmp_path, source_name="api-body")

    assert where(caught.value.problems) == [("api-body:2", "functions.oscar")]


def test_clusters_section_is_ignored_silently(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c: {name: svc, image: alpine, script: run.sh}
        clusters:
          c: {endpoint: https://oscar.example.org, auth_user: u, auth_password: p}
        """
    )

    workflow = load_fdl(fdl)

    assert [s.name for s in workflow.services] == ["svc"]
    assert workflow.warnings == []


# --- Warnings ----------------------------------------------------------------------------------


def test_functions_aws_is_a_warning_and_oscar_services_still_load(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          aws:
          - lambda: {name: scar-func, image: alpine, init_script: run.sh}
          oscar:
          - c: {name: svc, image: alpine, script: run.sh}
        """
    )

    workflow = load_fdl(fdl)

    assert workflow.warnings == ["functions.aws is not supported yet; ignored"]
    assert [s.name for s in workflow.services] == ["svc"]


def test_unknown_top_level_key_is_a_warning(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c: {name: svc, image: alpine, script: run.sh}
        storage_provider: {}
        """
    )

    [warning] = load_fdl(fdl).warnings

    assert warning.startswith("top-level key 'storage_provider' is not part of an OSCAR FDL")


# --- The file and its YAML ----------------------------------------------------------------------


def test_missing_file_is_reported_without_a_line(workdir: Path) -> None:
    [problem] = problems_of(Path("nowhere.yaml"))

    assert str(problem) == "nowhere.yaml: file: does not exist"


def test_yaml_syntax_error_is_located_at_the_error_mark(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              name: svc
              image: alpine: latest
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:5", "yaml")]
    assert problem.message == "mapping values are not allowed here"


def test_yaml_error_with_context_names_both_lines(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar: [{c: {name: svc}}
        clusters: {}
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:3", "yaml")]
    assert problem.message == ("expected ',' or ']', but got '<scalar>' (while parsing a flow sequence on line 2)")


def test_empty_file_needs_functions(workdir: Path) -> None:
    fdl = write_fdl("# nothing yet\n")

    [problem] = problems_of(fdl)

    assert (problem.location, problem.field) == ("workflow.yaml", "functions")
    assert problem.message.startswith("is required")


def test_unprintable_character_is_located_at_its_line(workdir: Path) -> None:
    fdl = write_fdl("functions:\n  oscar:\n  - c: {name: svc\x07}\n")

    [problem] = problems_of(fdl)

    assert str(problem) == ("workflow.yaml:3: yaml: unacceptable character #x0007: special characters are not allowed")


# --- Structure ---------------------------------------------------------------------------------


def test_missing_functions_is_located_at_the_document(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        # a workflow without functions
        storage_providers:
          s3: {}
        """
    )

    assert where(problems_of(fdl)) == [("workflow.yaml:2", "functions")]


def test_missing_functions_oscar(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscr:
          - c: {name: svc, image: alpine, script: run.sh}
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:2", "functions.oscar")]
    assert problem.message.startswith("is required")


def test_functions_oscar_must_be_a_list(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
            c: {name: svc, image: alpine, script: run.sh}
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:3", "functions.oscar")]
    assert problem.message == "must be a list of {<cluster-id>: {<service fields>}} items"


def test_items_that_are_not_one_key_mappings(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - name: svc
            image: alpine
          - just-a-string
          - c: {name: ok, image: alpine, script: run.sh}
        """
    )

    problems = problems_of(fdl)

    assert where(problems) == [
        ("workflow.yaml:3", "functions.oscar[0]"),
        ("workflow.yaml:5", "functions.oscar[1]"),
    ]
    assert all("one key, the cluster id" in p.message for p in problems)


def test_service_that_is_not_a_mapping(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:3", "functions.oscar[0].c")]
    assert problem.message.startswith("must be a mapping of service fields")


def test_alias_to_an_enclosing_node_is_a_problem_not_a_hang(workdir: Path) -> None:
    fdl = write_fdl("functions:\n  oscar: &loop\n  - c: *loop\n")

    assert where(problems_of(fdl)) == [("workflow.yaml:3", "functions.oscar[0].c")]


# --- Scripts -----------------------------------------------------------------------------------


def test_script_not_found_names_the_resolved_path(workdir: Path) -> None:
    Path("fdl").mkdir()
    Path("fdl/workflow.yaml").write_text(
        textwrap.dedent(
            """\
            functions:
              oscar:
              - oscar-cluster:
                  name: svc
                  image: alpine
                  script: scripts/missing.sh
            """
        )
    )

    [problem] = problems_of(Path("fdl/workflow.yaml"))

    assert where([problem]) == [("fdl/workflow.yaml:6", "functions.oscar[0].oscar-cluster.script")]
    assert f"{workdir.resolve() / 'fdl' / 'scripts' / 'missing.sh'} does not exist" in problem.message


def test_script_that_is_a_directory(workdir: Path) -> None:
    Path("scripts").mkdir()
    fdl = write_fdl("functions:\n  oscar:\n  - c: {name: svc, image: alpine, script: scripts}\n", scripts={})

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:3", "functions.oscar[0].c.script")]
    assert problem.message == f"script file {workdir.resolve() / 'scripts'} is not a file"


def test_script_that_is_not_utf8(workdir: Path) -> None:
    Path("latin1.sh").write_bytes("#!/bin/sh\necho café\n".encode("latin-1"))
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              name: svc
              image: alpine
              script: latin1.sh
        """,
        scripts={},
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:6", "functions.oscar[0].c.script")]
    assert problem.message.startswith(f"script file {workdir.resolve() / 'latin1.sh'} is not UTF-8 text")


def test_an_empty_script_file_is_a_problem(workdir: Path) -> None:
    fdl = write_fdl(
        "functions:\n  oscar:\n  - c:\n      name: svc\n      image: alpine\n      script: empty.sh\n",
        scripts={"empty.sh": "  \n"},
    )

    [problem] = problems_of(fdl)

    assert (
        str(problem)
        == f"workflow.yaml:6: functions.oscar[0].c.script: script file {workdir.resolve() / 'empty.sh'} is empty"
    )


# --- Model validation --------------------------------------------------------------------------


def test_bad_memory_reads_as_file_line_field_message(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - oscar-cluster:
              name: svc
              image: alpine
              script: run.sh
              memory: 1Gx
        """
    )

    [problem] = problems_of(fdl)

    assert str(problem) == (
        "workflow.yaml:7: functions.oscar[0].oscar-cluster.memory: "
        "'1Gx' is not a memory quantity; use e.g. 256Mi, 1Gi or 512M"
    )


def test_nested_error_is_located_at_its_value(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c: {name: first, image: alpine, script: run.sh}
          - oscar-cluster:
              name: second
              image: alpine
              script: run.sh
              input:
              - storage_provider: minio.default
                path: /
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:10", "functions.oscar[1].oscar-cluster.input[0].path")]
    assert problem.message == "must not be empty: give bucket or bucket/folder"


def test_missing_required_field_is_located_at_the_service_mapping(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              script: run.sh
              cpu: '0.5'
        """
    )

    problems = problems_of(fdl)

    assert sorted(where(problems)) == [
        ("workflow.yaml:4", "functions.oscar[0].c.image"),
        ("workflow.yaml:4", "functions.oscar[0].c.name"),
    ]
    assert {p.message for p in problems} == {"is required"}


def test_environment_errors_are_located_whatever_the_key_case(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              name: svc
              image: alpine
              script: run.sh
              environment:
                Secrets: {TOKEN: xyz}
                Variables: [A, B]
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:9", "functions.oscar[0].c.environment.variables")]
    assert problem.message == "must be a mapping of NAME: value"


def test_value_from_a_yaml_merge_key_is_located_where_it_was_written(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        defaults: &defaults
          image: alpine
          memory: 1Gx
        functions:
          oscar:
          - c:
              <<: *defaults
              name: svc
              script: run.sh
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:3", "functions.oscar[0].c.memory")]


def test_several_problems_are_reported_at_once(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - oscar-cluster:
              name: first
              script: run.sh
              memory: 1Gx
          - oscar-cluster:
              name: second
              image: alpine
              script: nowhere.sh
        """
    )

    problems = problems_of(fdl)

    assert where(problems) == [
        ("workflow.yaml:4", "functions.oscar[0].oscar-cluster.image"),
        ("workflow.yaml:6", "functions.oscar[0].oscar-cluster.memory"),
        ("workflow.yaml:10", "functions.oscar[1].oscar-cluster.script"),
    ]
    assert "nowhere.sh does not exist" in problems[2].message


def test_a_service_with_an_invalid_field_still_gets_the_rules_on_the_rest_in_the_same_round(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              name: loop
              image: alpine
              script: run.sh
              memory: lots
              input:
              - {storage_provider: minio.default, path: photos/in}
              output:
              - {storage_provider: minio.default, path: photos/in/out}
              - {storage_provider: s3.nowhere, path: results/out}
        """
    )

    problems = problems_of(fdl)

    assert where(problems) == [
        ("workflow.yaml:7", "functions.oscar[0].c.memory"),
        ("workflow.yaml:11", "functions.oscar[0].c.output[0].path"),
        ("workflow.yaml:12", "functions.oscar[0].c.output[1].storage_provider"),
    ]
    assert "own input" in problems[1].message and "not defined" in problems[2].message


def test_shared_storage_provider_error_is_reported_once_at_the_top_level(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c: {name: one, image: alpine, script: run.sh}
          - c: {name: two, image: alpine, script: run.sh}
        storage_providers:
          s3:
            my_s3: not-a-mapping
        """
    )

    assert where(problems_of(fdl)) == [("workflow.yaml:7", "storage_providers.s3.my_s3")]


def test_top_level_storage_providers_must_be_a_mapping(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c: {name: one, image: alpine, script: run.sh}
        storage_providers: [s3]
        """
    )

    assert where(problems_of(fdl)) == [("workflow.yaml:4", "storage_providers")]


# --- Cross-field checks ------------------------------------------------------------------------


def test_output_equal_to_or_under_its_own_input(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              name: loop
              image: alpine
              script: run.sh
              input:
              - path: images/in
              output:
              - path: images/in
              - path: images/in/thumbs
              - path: images/out
        """
    )

    problems = problems_of(fdl)

    assert where(problems) == [
        ("workflow.yaml:10", "functions.oscar[0].c.output[0].path"),
        ("workflow.yaml:11", "functions.oscar[0].c.output[1].path"),
    ]
    assert all("would trigger the service again" in p.message for p in problems)


def test_undefined_storage_provider_reference(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c:
              name: svc
              image: alpine
              script: run.sh
              output:
              - storage_provider: s3.nope
                path: bucket/out
        storage_providers:
          s3:
            defined: {access_key: AK, secret_key: SK, region: us-east-1}
        """
    )

    [problem] = problems_of(fdl)

    assert str(problem) == (
        "workflow.yaml:8: functions.oscar[0].c.output[0].storage_provider: "
        "'s3.nope' is not defined under storage_providers.s3"
    )


def test_duplicate_names_point_at_the_later_service(workdir: Path) -> None:
    fdl = write_fdl(
        """\
        functions:
          oscar:
          - c: {name: same, image: alpine, script: run.sh}
          - c: {name: other, image: alpine, script: run.sh}
          - c:
              name: same
              image: alpine
              script: run.sh
        """
    )

    [problem] = problems_of(fdl)

    assert where([problem]) == [("workflow.yaml:6", "functions.oscar[2].c.name")]
    assert problem.message.startswith("'same' is already the name of functions.oscar[0].c")


def test_one_service_listed_for_two_clusters_needs_this_platforms_cluster_id(workdir: Path) -> None:
    fdl = write_fdl(
        "functions:\n  oscar:\n"
        "  - a: {name: same, image: alpine, script: run.sh}\n"
        "  - b: {name: same, image: x, script: run.sh}\n"
    )

    [problem] = problems_of(fdl)
    on_b = load_fdl(fdl, Clusters(this="b"))

    assert problem.message.startswith("deploys to clusters a, b: say which is this platform with --cluster")
    assert [(s.name, s.image) for s in on_b.services] == [("same", "x")]
    assert on_b.warnings == ["1 service entry of other clusters skipped"]


# --- Shapes found in OSCAR's own examples ----------------------------------------------------------


def test_trailing_tabs_an_empty_region_and_a_service_without_a_script_apply_as_in_oscar(workdir: Path) -> None:
    """Written for the project after the shapes of OSCAR's examples/ that PyYAML or the model refused."""
    fdl = write_fdl(
        "functions:\n"
        "  oscar:\n"
        "  - my-cluster:\t\n"
        "      name: plants\t\n"
        "      image: grycap/plants\n"
        "      script: run.sh \t \n"
        "      input:\n"
        "      - {storage_provider: s3.aws, path: plants/in}\n"
        "      output:\n"
        "      - {storage_provider: minio.default, path: plants/out}\n"
        "  - my-cluster:\n"
        "      name: model-api\n"
        "      image: grycap/model-server\n"
        "      expose: {api_port: 5000}\n"
        "storage_providers:\n"
        "  s3:\n"
        "    aws:\n"
        "      access_key: AK\n"
        "      secret_key: SK\n"
        "      region:\n"
    )

    workflow = load_fdl(fdl)

    plants, model_api = workflow.services
    assert plants.script == SCRIPT
    settings = plants.provider_settings("s3.aws")
    assert S3Credentials.model_validate(settings).region == "us-east-1", "an empty region is the default one"
    assert model_api.script == ""
    assert model_api.fields_not_acted_on()[0].startswith("model-api: has no script")
    assert any("expose" in warning for warning in model_api.fields_not_acted_on())
