"""A job as a batch/v1 Job manifest: a pure function of the JobSpec and the `[kubernetes]` settings.

    pod ─ stager (stager image: busybox) ─ wget the script and the input into /conveyor, → /conveyor/staged;
        │                                  waits for /conveyor/exit; on 0 POSTs every file under
        │                                  /conveyor/output; exits with the script's code
        ─ script (the service's image, unchanged) ─ waits for /conveyor/staged; /bin/sh the script with
                                                    the contract's environment; its exit code → /conveyor/exit

Two containers side by side, not an init container: the kubelet notices an init container's end only
at its next sync, a second later (bench/kubernetes_throughput.py measured 1.03 s against 0.55 s).

The pod holds a token good for its own job only (supervisor/remote.py), never a store credential.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from conveyor.backends.kubernetes import quota
from conveyor.model.event import iso_z
from conveyor.model.job import JobSpec
from conveyor.model.service import Service
from conveyor.settings import KubernetesSettings
from conveyor.supervisor import contract
from conveyor.supervisor.run import batch_event

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "conveyor"
SELECTOR = f"{MANAGED_BY}={MANAGER}"
"""The one label selector of everything this backend creates (the watch uses it)."""
JOB_LABEL = "conveyor.job"
SERVICE_LABEL = "conveyor.service"
ATTEMPT_LABEL = "conveyor.attempt"
JOB_ID_ANNOTATION = "conveyor.job-id"
"""The job id in full (a label value is cut at 63 characters)."""

SCRIPT_CONTAINER = "script"
STAGER_CONTAINER = "stager"
WORK = "/conveyor"
INPUT_DIR = f"{WORK}/input"
OUTPUT_DIR = f"{WORK}/output"
SCRIPT = f"{WORK}/script.sh"
STAGED_FILE = f"{WORK}/staged"
EXIT_FILE = f"{WORK}/exit"
STAGE_IN_FAILED = 97
"""The stager's exit code when it could not stage in: the script never ran (an infrastructure failure)."""

STAGER_RESOURCES = {"requests": {"cpu": "10m", "memory": str(16 * 2**20)}, "limits": {"memory": "64Mi"}}
"""The stager container's (busybox sh + wget). The script's requests are the service's less these, so
the pod asks the scheduler for what the service asked for."""

_AUTH = '--header "Authorization: Bearer $CONVEYOR_TOKEN"'

_WAIT_STAGED = f"""while [ ! -s {STAGED_FILE} ]; do sleep 0.05 2>/dev/null || sleep 1 2>/dev/null || :; done
read -r staged < {STAGED_FILE}
if [ "$staged" != ok ]; then echo "the script does not run: stage-in failed"; exit 0; fi
"""
"""The script's container waits for the stager's stage-in (a shell builtin loop: the image needs only
/bin/sh; `sleep` when it has one)."""

_STAGED = f"""echo ok > {STAGED_FILE}.tmp && mv {STAGED_FILE}.tmp {STAGED_FILE}
echo "stage-in: done"
"""
_STAGE_IN_FAILED = f"""echo "stage-in: failed"; echo failed > {STAGED_FILE}.tmp && mv {STAGED_FILE}.tmp {STAGED_FILE}
  exit {STAGE_IN_FAILED}"""

_RETRY = """retry() {
  tries=0
  until "$@"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 8 ]; then return 1; fi
    echo "the platform did not answer; trying again in $((tries * 4)) s"
    sleep $((tries * 4))
  done
}
"""
"""`retry COMMAND...`: up to 8 tries over about two minutes, for a platform that restarts (its API answers
503, or nothing, meanwhile). The command is not printed: it carries the job's token."""

_UPLOAD = (
    _RETRY
    + f"""upload() {{
  cd "$1" || return 1
  find . -type f > {WORK}/outputs.list
  count=0
  while IFS= read -r file; do
    name=${{file#./}}
    encoded=$(printf %s "$name" | od -An -v -tx1 | tr -d ' \\n' | sed 's/../%&/g')
    base64 -w 0 "$file" > {WORK}/upload.b64
    if ! retry wget -q -O /dev/null --header "Authorization: Bearer $3" --header "Content-Transfer-Encoding: base64" \\
        --post-file {WORK}/upload.b64 "$2/outputs/$encoded"; then
      echo "stage-out: uploading $name failed"; return 1
    fi
    count=$((count + 1))
  done < {WORK}/outputs.list
  echo "stage-out: $count file(s) uploaded"
}}
"""
)
"""`upload DIR JOB_URL TOKEN`: every file under DIR to the job's outputs route. Each file goes as base64:
busybox wget sends a --post-file as a C string, so a binary file would stop at its first NUL byte."""

_WAIT_EXIT = f"""while [ ! -f {EXIT_FILE} ]; do sleep 0.2 2>/dev/null || sleep 1; done
"""

STAGE = (
    _UPLOAD
    + f"""if ! (set -e
  mkdir -p {INPUT_DIR} {OUTPUT_DIR}
  chmod 777 {INPUT_DIR} {OUTPUT_DIR}
  retry wget -q -O {SCRIPT} {_AUTH} "$CONVEYOR_JOB_URL/script"
  if [ -n "$CONVEYOR_INPUT" ]; then retry wget -q -O "$CONVEYOR_INPUT" {_AUTH} "$CONVEYOR_JOB_URL/input"; fi); then
  {_STAGE_IN_FAILED}
fi
{_STAGED}{_WAIT_EXIT}code=$(cat {EXIT_FILE})
if [ "$code" != 0 ]; then echo "stage-out: the script exited with code $code; nothing is uploaded"; exit "$code"; fi
upload {OUTPUT_DIR} "$CONVEYOR_JOB_URL" "$CONVEYOR_TOKEN"
"""
)
"""The stager container: the script and the input from the platform's API (busybox sh + wget), then,
once the script ended with 0, every file it left under the output directory."""

RUN_SCRIPT = f"""{_WAIT_STAGED}/bin/sh {SCRIPT}
code=$?
echo "$code" > {EXIT_FILE}.tmp && mv {EXIT_FILE}.tmp {EXIT_FILE}
exit "$code"
"""
"""The service's container: any image with /bin/sh; the script's exit code is the container's."""

BATCH_MARK = "### conveyor batch input"
"""Lines the batch wrapper prints around each input's run, so the script's log splits by input."""

_STAGE_IN_BATCH = f"""if ! (set -e
  mkdir -p {INPUT_DIR} {OUTPUT_DIR}
  chmod 777 {INPUT_DIR} {OUTPUT_DIR}
  retry wget -q -O {SCRIPT} {_AUTH} "$CONVEYOR_JOB_URL/script"
  printf '%s\\n' "$CONVEYOR_BATCH" | while read -r id token path; do
    if [ -z "$path" ]; then continue; fi
    mkdir -p "${{path%/*}}"
    retry wget -q -O "$path" --header "Authorization: Bearer $token" "$CONVEYOR_JOBS_URL/$id/input"
  done); then
  {_STAGE_IN_FAILED}
fi
{_STAGED}"""
"""A batch's stage-in: the script, then every input (CONVEYOR_BATCH: a line per input with its job id,
token and path in the pod)."""

STAGE_BATCH = (
    _UPLOAD
    + _STAGE_IN_BATCH
    + f"""{_WAIT_EXIT}code=$(cat {EXIT_FILE})
if [ "$code" != 0 ]; then echo "stage-out: the script exited with code $code; nothing is uploaded"; exit "$code"; fi
upload {OUTPUT_DIR} "$CONVEYOR_JOB_URL" "$CONVEYOR_TOKEN"
"""
)
"""A batch's stager in mode `directory`: every input in, the one run's outputs out (on the lead job)."""

RUN_EACH = f"""{_WAIT_STAGED}i=0
while [ "$i" -lt "$CONVEYOR_BATCH_SIZE" ]; do
  out={OUTPUT_DIR}/$i
  mkdir -p "$out" && chmod 777 "$out"
  echo "{BATCH_MARK} $i start"
  (eval "eval \\"\\$CONVEYOR_INPUT_$i\\""; TMP_OUTPUT_DIR=$out; export TMP_OUTPUT_DIR; /bin/sh {SCRIPT})
  code=$?
  echo "$code" > {WORK}/exit.$i
  echo "{BATCH_MARK} $i exit $code"
  i=$((i + 1))
done
echo 0 > {EXIT_FILE}.tmp && mv {EXIT_FILE}.tmp {EXIT_FILE}
"""
"""A batch run input by input (mode `each`): the script once per input, each with its own environment
(CONVEYOR_INPUT_<i>: the exports of input i) and output directory; every exit code is kept."""

STAGE_EACH = (
    _UPLOAD
    + _STAGE_IN_BATCH
    + f"""{_WAIT_EXIT}printf '%s\\n' "$CONVEYOR_BATCH" | {{
  i=0
  while read -r id token path; do
    if [ "$(cat {WORK}/exit.$i 2>/dev/null)" = 0 ]; then
      echo "input $i:"
      upload {OUTPUT_DIR}/$i "$CONVEYOR_JOBS_URL/$id" "$token" || exit 1
    fi
    i=$((i + 1))
  done
}}
"""
)
"""A batch's stager in mode `each`: every input in; the outputs of each input whose script succeeded out."""

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


def job_name(spec: JobSpec) -> str:
    """The Job's name: stable for a job id and attempt (a restarted platform finds it), ≤ 63 characters."""
    digest = hashlib.sha256(spec.job_id.encode()).hexdigest()[:20]
    return f"conveyor-{digest}-{spec.attempt}"


def label_value(text: str) -> str:
    """`text` when it is a valid label value, else a digest of it."""
    return text if _LABEL_VALUE.match(text) else "h-" + hashlib.sha256(text.encode()).hexdigest()[:40]


def input_file(spec: JobSpec, input_name: str) -> str:
    return f"{INPUT_DIR}/{input_name}"


def secret_name(spec: JobSpec) -> str | None:
    """The Secret that holds the service's secrets for this job (named as its Job); None without secrets."""
    return job_name(spec) if spec.service.environment.secrets else None


def build_secret(spec: JobSpec, config: KubernetesSettings) -> dict[str, Any] | None:
    """The service's secrets as a Secret (keys s0, s1...: env names need not be valid Secret keys)."""
    name = secret_name(spec)
    if name is None:
        return None
    values = {f"s{index}": value for index, value in enumerate(spec.service.environment.secrets.values())}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": {MANAGED_BY: MANAGER, JOB_LABEL: label_value(spec.job_id)},
            "annotations": {JOB_ID_ANNOTATION: spec.job_id},
        },
        "type": "Opaque",
        "stringData": values,
    }


def _env_entries(spec: JobSpec, input_name: str) -> list[dict[str, Any]]:
    """The script's environment; the secrets by reference to the job's Secret, never as values."""
    entries: dict[str, dict[str, Any]] = {}
    for name, value in spec.service.environment.variables.items():
        entries[name] = {"name": name, "value": value}
    secret = secret_name(spec)
    for index, name in enumerate(spec.service.environment.secrets):
        entries[name] = {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": f"s{index}"}}}
    for name, value in script_environment(spec, input_name, with_user_values=False).items():
        entries[name] = {"name": name, "value": value}
    return list(entries.values())


def script_environment(spec: JobSpec, input_name: str, *, with_user_values: bool = True) -> dict[str, str]:
    """What the local supervisor sets (supervisor/run.py), with the pod's paths; user values first."""
    env = dict(spec.service.environment.variables) if with_user_values else {}
    if with_user_values:
        env.update(spec.service.environment.secrets)
    if spec.event is not None:
        env[contract.STORAGE_OBJECT_KEY] = spec.event.ref.key
        env[contract.EVENT] = json.dumps(spec.event.to_s3_record())
        env[contract.EVENT_TIME] = iso_z(spec.event.event_time)
    elif spec.request_path is not None:
        body = spec.request_path.read_bytes()
        if len(body) <= contract.EVENT_ENV_LIMIT and b"\x00" not in body:
            env[contract.EVENT] = body.decode("utf-8", errors="replace")
    path = INPUT_DIR if spec.service.file_stage_in and spec.event is not None else input_file(spec, input_name)
    env[contract.INPUT_FILE_PATH] = path
    env[contract.INPUT_FILE_PATHS] = path
    env[contract.TMP_INPUT_DIR] = INPUT_DIR
    env[contract.TMP_OUTPUT_DIR] = OUTPUT_DIR
    env[contract.JOB_UUID] = spec.job_id
    env[contract.OSCAR_SERVICE_NAME] = spec.service.name
    return env


_STAGER_CPU_M = 10
_STAGER_MEMORY = 16 * 2**20


def resources(spec: JobSpec) -> dict[str, dict[str, str]]:
    """The script container's: limits as the service asks; requests less the stager's, so that the pod
    as a whole requests what the service asks for (and as many pods fit a node as the service implies)."""
    service = spec.service
    cpu_m = max(1, math.ceil(service.cpu_cores * 1000))
    limits = {"cpu": f"{cpu_m}m", "memory": str(service.memory_bytes)}
    requests = {
        "cpu": f"{max(1, cpu_m - _STAGER_CPU_M)}m",
        "memory": str(max(2**20, service.memory_bytes - _STAGER_MEMORY)),
    }
    if service.enable_gpu:
        limits["nvidia.com/gpu"] = "1"
    return {"requests": requests, "limits": limits}


def quota_usage(spec: JobSpec) -> dict[str, Decimal]:
    """What the job's pod counts against a namespace's ResourceQuotas (see build_job's containers)."""
    return quota.pod_usage([{"resources": resources(spec)}, {"resources": STAGER_RESOURCES}], [])


def placement(config: KubernetesSettings, pull_secrets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Where and as whom a pod runs, from the `[kubernetes]` settings: the same for a job's pod and
    the probe of `conveyor kubernetes check`. `pull_secrets` come after the platform's own."""
    fields: dict[str, Any] = {}
    if config.service_account:
        fields["serviceAccountName"] = config.service_account
    if config.node_selector:
        fields["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        fields["tolerations"] = list(config.tolerations)
    if secrets := list(dict.fromkeys([*config.image_pull_secrets, *pull_secrets])):
        fields["imagePullSecrets"] = [{"name": name} for name in secrets]
    return fields


def service_pull_secrets(service: Service) -> list[str]:
    """OSCAR's `image_pull_secrets` of the service: names of Secrets in the namespace."""
    given = (service.model_extra or {}).get("image_pull_secrets")
    return [str(name) for name in given] if isinstance(given, list) else []


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch as its pod sees it: its job, the job's staging token, its file name."""

    spec: JobSpec
    token: str
    input_name: str


def build_job(
    spec: JobSpec,
    config: KubernetesSettings,
    api_url: str,
    token: str,
    input_name: str,
    batch: Sequence[BatchInput] = (),
) -> dict[str, Any]:
    """The batch/v1 Job that runs `spec` (a plain dict, as the API takes it); with `batch` (the other
    jobs of spec.batch), one Job runs every input (_run_batch)."""
    service = spec.service
    labels = {
        MANAGED_BY: MANAGER,
        JOB_LABEL: label_value(spec.job_id),
        SERVICE_LABEL: label_value(service.name),
        ATTEMPT_LABEL: str(spec.attempt),
    }
    staged_input = "" if service.file_stage_in and spec.event is not None else input_file(spec, input_name)
    stager_env = [
        {"name": "CONVEYOR_JOB_URL", "value": f"{api_url.rstrip('/')}/conveyor/v1/jobs/{quote(spec.job_id, safe='')}"},
        {"name": "CONVEYOR_TOKEN", "value": token},
        {"name": "CONVEYOR_INPUT", "value": staged_input},
    ]
    work_mount = [{"name": "work", "mountPath": WORK}]
    pull = {"imagePullPolicy": config.image_pull_policy} if config.image_pull_policy else {}
    # the stager first: the kubelet starts a pod's containers in order, and stage-in is what the script waits for
    containers = [
        {
            "name": STAGER_CONTAINER,
            "image": config.stager_image,
            "command": ["/bin/sh", "-c", STAGE],
            "env": stager_env,
            "resources": STAGER_RESOURCES,
            "volumeMounts": work_mount,
            **pull,
        },
        {
            "name": SCRIPT_CONTAINER,
            "image": service.image,
            "command": ["/bin/sh", "-c", RUN_SCRIPT],
            "env": _env_entries(spec, input_name),
            "resources": resources(spec),
            "volumeMounts": work_mount,
            **pull,
        },
    ]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": containers,
        "volumes": [{"name": "work", "emptyDir": {}}],
        "hostNetwork": config.host_network,
        "terminationGracePeriodSeconds": 5,
        "automountServiceAccountToken": bool(config.service_account),
    }
    pod_spec.update(placement(config, service_pull_secrets(service)))
    if config.host_network:
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if batch:
        _run_batch(pod_spec, [BatchInput(spec, token, input_name), *batch], api_url)
    inputs = 1 + len(batch)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec),
            "namespace": config.namespace,
            "labels": labels,
            "annotations": {JOB_ID_ANNOTATION: spec.job_id},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": service.timeout * inputs + config.time_margin_s,
            "ttlSecondsAfterFinished": config.ttl_s,
            "template": {
                # OSCAR's labels and annotations as annotations: label values have rules theirs may break
                "metadata": {"labels": labels, "annotations": {**service.user_labels, JOB_ID_ANNOTATION: spec.job_id}},
                "spec": pod_spec,
            },
        },
    }


def _run_batch(pod_spec: dict[str, Any], inputs: list[BatchInput], api_url: str) -> None:
    """Turn a one-input pod into a batch's: the stagers get every input's job, token and path; mode
    `each` runs the script once per input (RUN_EACH), `directory` once with every input in the input
    directory, as the local supervisor does (supervisor/run.py)."""
    lead = inputs[0].spec
    each = lead.service.batch is None or lead.service.batch.mode == "each"
    paths = [_batch_path(item, index if each else None) for index, item in enumerate(inputs)]
    lines = [
        f"{quote(item.spec.job_id, safe='')} {item.token} {path}" for item, path in zip(inputs, paths, strict=True)
    ]
    batch_env = [
        {"name": "CONVEYOR_JOBS_URL", "value": f"{api_url.rstrip('/')}/conveyor/v1/jobs"},
        {"name": "CONVEYOR_BATCH", "value": "\n".join(lines)},
        {"name": "CONVEYOR_BATCH_SIZE", "value": str(len(inputs))},
    ]
    stager, script = pod_spec["containers"]
    stager["env"] = [*stager["env"], *batch_env]
    stager["command"] = ["/bin/sh", "-c", STAGE_EACH if each else STAGE_BATCH]
    if each:
        script["command"] = ["/bin/sh", "-c", RUN_EACH]
        script["env"] = [*script["env"], batch_env[2]] + [
            {"name": f"CONVEYOR_INPUT_{index}", "value": _exports(item, path)}
            for index, (item, path) in enumerate(zip(inputs, paths, strict=True))
        ]
    else:
        given = [path for path in paths if path]
        event = batch_event([item.spec for item in inputs])
        replaced = {contract.INPUT_FILE_PATHS: "\n".join(given), **({contract.EVENT: event} if event else {})}
        script["env"] = [
            {"name": entry["name"], "value": replaced[entry["name"]]} if entry["name"] in replaced else entry
            for entry in script["env"]
        ]


def _batch_path(item: BatchInput, index: int | None) -> str:
    """Where input `item` is staged in the pod: its own directory per input in mode `each`; "" when the
    service stages nothing (file_stage_in)."""
    if item.spec.service.file_stage_in and item.spec.event is not None:
        return ""
    return f"{INPUT_DIR}/{index}/{item.input_name}" if index is not None else f"{INPUT_DIR}/{item.input_name}"


def _exports(item: BatchInput, path: str) -> str:
    """A shell line that sets input `item`'s part of the contract (its key, event, path, job id)."""
    env = script_environment(item.spec, item.input_name, with_user_values=False)
    if path:
        env[contract.INPUT_FILE_PATH] = env[contract.INPUT_FILE_PATHS] = path
    env.pop(contract.TMP_OUTPUT_DIR, None)  # the wrapper gives each input its own
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
