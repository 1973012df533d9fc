"""Load an OSCAR FDL file (reference/oscar-api.md §2) into `model.Service` objects.

A two-service workflow, chained through a bucket::

    functions:
      oscar:
      - oscar-cluster:              # cluster id: becomes Service.cluster_id
          name: plants
          image: grycap/oscar-theano-plants
          script: plants.sh         # relative to this file's directory; the content is embedded
          cpu: 1                    # a number is fine, the model keeps it as a string
          memory: 2Gi
          environment:
            Variables: {MODEL: v2}  # old oscar-cli spelling; "variables" works too
          input:  [{storage_provider: minio.default, path: example-workflow/in}]
          output: [{storage_provider: minio.default, path: example-workflow/med}]
      - oscar-cluster:
          name: grayify
          image: ghcr.io/grycap/imagemagick
          script: grayify.sh
          input:  [{storage_provider: minio.default, path: example-workflow/med}]
          output: [{storage_provider: s3.my_s3, path: my-aws-bucket/res}]
    storage_providers:              # copied into every service; a service's own kind+id wins
      s3: {my_s3: {access_key: AK, secret_key: SK, region: us-east-1}}
    clusters:                       # oscar-cli's cluster credentials: not used by Conveyor
      oscar-cluster: {endpoint: https://oscar.example.org}

Every problem in the file is reported at once, as one `FDLError` whose `Problem`s carry the
field path (`functions.oscar[0].oscar-cluster.memory`) and the `file:line` of the YAML node,
so a user can fix the whole file in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from conveyor.control.validation import definition_problems, duplicate_names
from conveyor.errors import ConveyorError, FDLError, Problem
from conveyor.model.service import Service

# A position in the YAML document: mapping keys and list indices, from the root.
YamlPath = tuple[str | int, ...]

# Top-level keys oscar-cli understands; anything else is probably a typo, worth a warning.
KNOWN_TOP_LEVEL_KEYS = ("functions", "storage_providers", "clusters")
SERVICE_ITEM_SHAPE = "{<cluster-id>: {<service fields>}}"


@dataclass
class Workflow:
    """The services an FDL file declares, in file order, and what was ignored while loading it."""

    source: Path
    services: list[Service]
    warnings: list[str] = field(default_factory=list)


ClusterStore = Callable[[str], dict[str, Any] | None]
"""The store of another cluster by its id (`minio.<cluster-id>` in an FDL), as oscar-cli resolves it:
its MinIO settings from that cluster's /system/config; None when the cluster is not known."""


@dataclass(frozen=True)
class Clusters:
    """Which entries of a multi-cluster FDL are this platform's, and how other clusters' stores are reached."""

    this: str | None = None
    """This platform's cluster id; needed only when the FDL names several."""
    store_of: ClusterStore = lambda _cluster_id: None


def load_fdl(path: Path, clusters: Clusters | None = None) -> Workflow:
    """Read and validate an FDL file; script paths are relative to the file's directory.

    Raises FDLError carrying every problem found. Locations name `path` as given.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FDLError([Problem(field="file", message=_unreadable(exc), location=str(path))]) from None
    return parse_fdl(text, base_dir=path.parent, source_name=str(path), clusters=clusters)


def parse_fdl(text: str, base_dir: Path, source_name: str = "<string>", clusters: Clusters | None = None) -> Workflow:
    """Validate FDL text; `base_dir` resolves script paths, `source_name` names it in locations."""
    root, data = _parse_yaml(text, source_name)
    report = _Report(source_name, _index_lines(root))
    services = _load_services(data, base_dir, report, clusters or Clusters())
    if report.problems:
        # The same shared storage provider error shows up once per service: say it once.
        raise FDLError(list(dict.fromkeys(report.problems)))
    return Workflow(source=Path(source_name), services=services, warnings=report.warnings)


class _Report:
    """Collects problems, located through the line of each YAML node, and warnings."""

    def __init__(self, source_name: str, lines: dict[YamlPath, int]) -> None:
        self.source_name = source_name
        self.lines = lines
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def problem(self, path: YamlPath, message: str) -> None:
        self.problems.append(Problem(field=format_field(path), message=message, location=self.locate(path)))

    def locate(self, path: YamlPath) -> str:
        """`file:line` of the node at `path`, or of its nearest ancestor in the file (for a
        missing field, or a value the loader added such as merged storage providers)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(_line_key(part) for part in path[:end]))
            if line is not None:
                return f"{self.source_name}:{line}"
        return self.source_name


def format_field(path: YamlPath) -> str:
    """('functions', 'oscar', 0, 'c', 'input', 1) -> 'functions.oscar[0].c.input[1]'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".")


def _parse_field(text: str) -> YamlPath:
    """The inverse of format_field, for the service-relative fields of `definition_problems`."""
    return tuple(int(index) if index else name for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", text))


def _line_key(part: str | int) -> str | int:
    # The model matches environment keys in any case ("Variables"), so line lookups do too.
    return part.lower() if isinstance(part, str) else part


def _unreadable(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a file"
    if isinstance(exc, UnicodeDecodeError):
        return f"is not UTF-8 text ({exc.reason} at byte {exc.start})"
    return f"cannot be read: {getattr(exc, 'strerror', None) or exc}"


# --- YAML ------------------------------------------------------------------------------------


_TRAILING_TAB = re.compile(r"[ \t]*\t[ \t]*$", re.MULTILINE)


def _parse_yaml(text: str, source_name: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data built from it, or FDLError on bad YAML.

    Trailing tabs go first: OSCAR's YAML parser (Go) ignores them, PyYAML refuses them, and OSCAR's
    own examples have some. Lines keep their numbers."""
    try:
        return _compose_and_construct(_TRAILING_TAB.sub("", text))
    except yaml.YAMLError as exc:
        line = _yaml_error_line(exc, text)
        location = f"{source_name}:{line}" if line else source_name
        raise FDLError([Problem(field="yaml", message=_yaml_error_message(exc), location=location)]) from None


def _compose_and_construct(text: str) -> tuple[yaml.Node | None, Any]:
    # One parse gives both: yaml.compose() then yaml.safe_load() would read the text twice.
    # Constructing also flattens `<<` merge keys in the node tree, so a merged value keeps the
    # line where it was written.
    loader = yaml.SafeLoader(text)  # already raises ReaderError for unprintable characters
    try:
        root = loader.get_single_node()
        return root, loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()


def _yaml_error_line(exc: yaml.YAMLError, text: str) -> int | None:
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return mark.line + 1
    if isinstance(exc, yaml.reader.ReaderError):  # a bad character: only a character offset
        return text.count("\n", 0, exc.position) + 1
    return None


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError) or not exc.problem:
        return str(exc).splitlines()[0]  # the rest names "<unicode string>", not the file
    if exc.context and exc.context_mark is not None:
        return f"{exc.problem} ({exc.context} on line {exc.context_mark.line + 1})"
    return exc.problem


def _index_lines(root: yaml.Node | None) -> dict[YamlPath, int]:
    """The 1-based start line of every node, keyed by its path (keys lower-cased, see _line_key)."""
    lines: dict[YamlPath, int] = {}

    def visit(node: yaml.Node, path: YamlPath, ancestors: frozenset[int]) -> None:
        if id(node) in ancestors:  # an alias to an enclosing node (`&a [*a]`) would never end
            return
        lines[path] = node.start_mark.line + 1
        inside = ancestors | {id(node)}
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    visit(value, (*path, _line_key(key.value)), inside)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                visit(item, (*path, index), inside)

    if root is not None:
        visit(root, (), frozenset())
    return lines


# --- Structure: functions.oscar[i].<cluster-id> ----------------------------------------------


@dataclass
class _ServiceItem:
    """One `{<cluster-id>: {<service fields>}}` item of functions.oscar."""

    index: int
    cluster_id: str
    fields: Any  # the service mapping as written; anything else is reported when loading it

    @property
    def path(self) -> YamlPath:
        return ("functions", "oscar", self.index, self.cluster_id)


def _load_services(data: Any, base_dir: Path, report: _Report, clusters: Clusters) -> list[Service]:
    items = _this_clusters_items(_service_items(data, report), clusters.this, report)
    shared_providers = _shared_storage_providers(data, report)
    loaded: list[tuple[_ServiceItem, Service]] = []
    for item in items:
        service = _load_service(item, shared_providers, base_dir, report, clusters.store_of)
        if service is not None:
            loaded.append((item, service))
    _check_duplicate_names(loaded, report)
    return [service for _, service in loaded]


def _service_items(data: Any, report: _Report) -> list[_ServiceItem]:
    """The items of functions.oscar, reporting what is missing or misshapen around them."""
    if not isinstance(data, dict) or "functions" not in data:
        report.problem(("functions",), "is required: an FDL file is a mapping with a functions.oscar list")
        return []
    _warn_unknown_keys(data, report)
    functions = data["functions"]
    if not isinstance(functions, dict):
        report.problem(("functions",), "must be a mapping with an `oscar` list")
        return []
    for platform in functions:
        if platform != "oscar":
            report.warnings.append(f"functions.{platform} is not supported yet; ignored")
    if "oscar" not in functions:
        report.problem(("functions", "oscar"), "is required: the list of services to deploy")
        return []
    oscar = functions["oscar"]
    if not isinstance(oscar, list):
        report.problem(("functions", "oscar"), f"must be a list of {SERVICE_ITEM_SHAPE} items")
        return []
    if not oscar:
        report.problem(("functions", "oscar"), f"must list at least one service as {SERVICE_ITEM_SHAPE}")
    items = []
    for index, entry in enumerate(oscar):
        if isinstance(entry, dict) and len(entry) == 1:
            [(cluster_id, fields)] = entry.items()
            items.append(_ServiceItem(index, str(cluster_id), fields))
        else:
            report.problem(
                ("functions", "oscar", index),
                f"must be a mapping with one key, the cluster id: {SERVICE_ITEM_SHAPE}",
            )
    return items


def _this_clusters_items(items: list[_ServiceItem], this: str | None, report: _Report) -> list[_ServiceItem]:
    """An FDL for one cluster deploys whole; one for several deploys the entries of this platform's.

    Several cluster ids alone do not make an FDL multi-cluster (ids are often arbitrary labels): it is
    one when an id is another entry's store (`minio.<cluster-id>`) or a service is listed under two."""
    named = list(dict.fromkeys(item.cluster_id for item in items))
    if len(named) <= 1 or (this is None and not _spans_clusters(items, named)):
        return items
    if this is None:
        report.problem(
            ("functions", "oscar"),
            f"deploys to clusters {', '.join(named)}: say which is this platform with --cluster "
            "(or [client] cluster_id in the config file)",
        )
        return []
    mine = [item for item in items if item.cluster_id == this]
    if not mine:
        report.problem(("functions", "oscar"), f"has no service for cluster {this!r}; it names {', '.join(named)}")
    skipped = len(items) - len(mine)
    if mine and skipped:
        report.warnings.append(f"{skipped} service entr{'y' if skipped == 1 else 'ies'} of other clusters skipped")
    return mine


def _spans_clusters(items: list[_ServiceItem], cluster_ids: list[str]) -> bool:
    stores = {f"minio.{cluster_id}" for cluster_id in cluster_ids}
    names: dict[str, str] = {}
    for item in items:
        if not isinstance(item.fields, dict):
            continue
        name = str(item.fields.get("name", ""))
        if names.setdefault(name, item.cluster_id) != item.cluster_id:
            return True  # one service deployed to two clusters
        for side in ("input", "output"):
            for io in item.fields.get(side) or []:
                if isinstance(io, dict) and io.get("storage_provider") in stores:
                    return True
    return False


def _warn_unknown_keys(data: dict[Any, Any], report: _Report) -> None:
    for key in data:
        if key not in KNOWN_TOP_LEVEL_KEYS:
            known = ", ".join(KNOWN_TOP_LEVEL_KEYS)
            report.warnings.append(f"top-level key {key!r} is not part of an OSCAR FDL ({known}); ignored")


def _shared_storage_providers(data: Any, report: _Report) -> dict[Any, Any]:
    """The top-level storage_providers, which oscar-cli copies into every service."""
    shared = data.get("storage_providers") if isinstance(data, dict) else None
    if shared is None:
        return {}
    if not isinstance(shared, dict):
        report.problem(("storage_providers",), "must be a mapping of kind: {id: {settings}}")
        return {}
    return shared


def _merge_storage_providers(shared: dict[Any, Any], own: Any) -> Any:
    """`shared` with the service's own providers on top: the service's kind+id wins."""
    if own is None:
        own = {}
    if not shared or not isinstance(own, dict):
        return own  # nothing to merge, or a misshapen value the model will report
    merged = {kind: dict(ids) if isinstance(ids, dict) else ids for kind, ids in shared.items()}
    for kind, ids in own.items():
        if isinstance(ids, dict) and isinstance(merged.get(kind), dict):
            merged[kind].update(ids)
        else:
            merged[kind] = ids
    return merged


# --- One service ---------------------------------------------------------------------------


def _load_service(
    item: _ServiceItem, shared_providers: dict[Any, Any], base_dir: Path, report: _Report, store_of: ClusterStore
) -> Service | None:
    """The validated Service of one item, or None after reporting why it is not valid."""
    if not isinstance(item.fields, dict):
        report.problem(item.path, "must be a mapping of service fields (name, image, script, ...)")
        return None
    data = dict(item.fields)
    data["cluster_id"] = item.cluster_id
    data["storage_providers"] = _merge_storage_providers(shared_providers, item.fields.get("storage_providers"))
    _add_other_clusters_stores(data, store_of, item, report)
    script_reported = False
    if "script" in data:
        script = _read_script(data["script"], base_dir, (*item.path, "script"), report)
        if script is None:
            script_reported = True
            del data["script"]
        else:
            data["script"] = script
    try:
        service = Service.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            if script_reported and error["loc"][:1] == ("script",):
                continue  # already said what is wrong with the script file
            _report_validation_error(item, error["loc"], error["type"], error["msg"], report)
        _report_rules_without(data, {error["loc"][0] for error in exc.errors() if error["loc"]}, item, report)
        return None
    for problem in definition_problems(service):
        report.problem((*item.path, *_parse_field(problem.field)), problem.message)
    return service


def _add_other_clusters_stores(
    data: dict[str, Any], store_of: ClusterStore, item: _ServiceItem, report: _Report
) -> None:
    """`minio.<cluster-id>` without settings names another cluster's store: oscar-cli fills in that
    cluster's MinIO settings (from its /system/config), and so does this."""
    providers = data["storage_providers"]
    if not isinstance(providers, dict):
        return
    named = {
        str(io.get("storage_provider", ""))
        for side in ("input", "output")
        for io in (data.get(side) or [])
        if isinstance(io, dict)
    }
    minio = providers.get("minio") if isinstance(providers.get("minio"), dict) else {}
    for provider in sorted(named):
        kind, _, cluster_id = provider.partition(".")
        if kind != "minio" or cluster_id in ("", "default") or cluster_id in minio:
            continue
        try:
            settings = store_of(cluster_id)
        except ConveyorError as error:
            report.problem((*item.path, "storage_providers"), f"the store of cluster {cluster_id!r}: {error}")
            continue
        if settings is not None:
            minio = {**minio, cluster_id: settings}
            providers["minio"] = minio


def _report_rules_without(data: dict[str, Any], invalid: set[Any], item: _ServiceItem, report: _Report) -> None:
    """A service with invalid fields still gets the rules on the rest (an output under its own input,
    an undefined provider), so that one round of fixes is enough: the invalid fields are dropped,
    and the rules run when what remains is a service; what they say of a dropped field is not repeated."""
    try:
        rest = Service.model_validate({key: value for key, value in data.items() if key not in invalid})
    except ValidationError:
        return  # a required field is among the invalid ones: the rules have nothing to look at
    for problem in definition_problems(rest):
        field = _parse_field(problem.field)
        if field[:1] and field[0] not in invalid:
            report.problem((*item.path, *field), problem.message)


def _read_script(value: Any, base_dir: Path, path: YamlPath, report: _Report) -> str | None:
    """The script's content, read from a path relative to the FDL's directory (the model turns
    its CRLF line ends into LF)."""
    if not isinstance(value, str) or not value.strip():
        report.problem(path, "must be the path of a script file, relative to the FDL file")
        return None
    script_path = (base_dir / value).resolve()
    if not script_path.exists():
        report.problem(path, f"script file {script_path} does not exist (paths are relative to the FDL file)")
        return None
    if not script_path.is_file():
        report.problem(path, f"script file {script_path} is not a file")
        return None
    try:
        content = script_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        report.problem(path, f"script file {script_path} is not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        report.problem(path, f"script file {script_path} cannot be read: {exc.strerror or exc}")
    else:
        if content.strip():
            return content
        report.problem(path, f"script file {script_path} is empty")
    return None


def _report_validation_error(
    item: _ServiceItem, loc: tuple[str | int, ...], kind: str, message: str, report: _Report
) -> None:
    if kind == "missing":
        message = "is required"
    report.problem(_origin_of(item, loc), message.removeprefix("Value error, "))


def _origin_of(item: _ServiceItem, loc: tuple[str | int, ...]) -> YamlPath:
    """Where in the file the value at model `loc` came from: the service's own fields, or the
    top-level storage_providers for a provider the service did not declare itself."""
    if loc[:1] == ("storage_providers",) and not _has_path(item.fields, loc[:3]):
        return loc
    return (*item.path, *loc)


def _has_path(data: Any, path: tuple[str | int, ...]) -> bool:
    for part in path:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _check_duplicate_names(loaded: list[tuple[_ServiceItem, Service]], report: _Report) -> None:
    """A name is a service's identity (its bucket prefix, routes, jobs): one service per name."""
    duplicated = set(duplicate_names([service for _, service in loaded]))
    first_with_name: dict[str, _ServiceItem] = {}
    for item, service in loaded:
        if service.name not in duplicated:
            continue
        first = first_with_name.setdefault(service.name, item)
        if first is not item:
            report.problem(
                (*item.path, "name"),
                f"{service.name!r} is already the name of {format_field(first.path)}: names must be unique",
            )
