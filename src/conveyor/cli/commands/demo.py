"""`conveyor demo`: the thesis' video case study, end to end, on this machine.

It starts a private platform (its own data dir and free ports, so it never disturbs a running
`conveyor up`), deploys examples/video-process, feeds it a video made from images that
scikit-image ships, follows the jobs, and checks that every expected output exists.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

import conveyor
from conveyor.cli import render
from conveyor.cli.client import CliError, Connection, ConveyorClient, ProblemsError
from conveyor.cli.commands.jobs import wait_for_jobs
from conveyor.errors import BackendUnavailable, FDLError, ImageError
from conveyor.fdl import load_fdl
from conveyor.model.event import ObjectRef
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.backends.local.backend import LocalBackend
    from conveyor.storage.s3 import S3Provider

DEMO_HELP = """Run the video workflow end to end: start a private platform, deploy
examples/video-process (video → one frame per second → face detection per frame), upload a
generated video, follow the jobs and print a summary. Exits 0 only if every expected output exists.

Jobs run as host processes by default, so it works on any machine; --runtime container runs the
same workflow in containers (build the image first: examples/video-process/build-image.sh).

--backend kubernetes runs both services as Jobs in the cluster the kubeconfig points at (the
[kubernetes] settings: kubeconfig, namespace, host_network, ...). Their image is built here first
(examples/video-process/build-image.sh, into the engine --runtime container uses) and must reach
the nodes: --push-to REGISTRY tags it REGISTRY/conveyor-video-demo:1 and pushes it (log the engine
in first), for any cluster; --import-into SOCKET pipes it into the node's containerd on this
machine (ctr -a SOCKET -n k8s.io images import); with neither, the nodes must have it already
(kind load docker-image, minikube image load), else the demo stops before any job runs and says
so. Pods fetch inputs and send outputs to the demo's API: --api-url http://ADDRESS:PORT is where
they reach it (the demo then listens on PORT on every interface), unless [kubernetes]
host_network is true and the API's loopback address is theirs (a one-machine cluster).

**Examples**: conveyor demo --seconds 8; conveyor demo --backend slurm (on a Slurm login node);
conveyor demo --backend kubernetes --push-to registry.example.org/me --api-url http://10.0.0.5:8090
"""

INPUT_PREFIX = "video/in/"
FRAMES_PREFIX = "video/frames/"
RESULTS_PREFIX = "video/results/"
VIDEO_SERVICE = "video-frames"
DETECT_SERVICE = "detect-faces"


def default_workflow() -> Path:
    return Path(conveyor.__file__).resolve().parents[2] / "examples" / "video-process" / "workflow.yaml"


def demo(
    runtime: Annotated[str, typer.Option(help="process (default) or container.")] = "process",
    backend: Annotated[
        str,
        typer.Option(
            help="local (default); slurm: every job through sbatch with the [slurm] settings; kubernetes: "
            "every job as a Kubernetes Job with the [kubernetes] settings."
        ),
    ] = "local",
    seconds: Annotated[int, typer.Option(help="Length of the generated video; one frame per second.", min=1)] = 6,
    workflow: Annotated[Path | None, typer.Option(help="FDL file (default: examples/video-process).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--demo-dir", help="Keep the demo's data here (default: a temporary dir).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    push_to: Annotated[
        str | None,
        typer.Option(
            metavar="REGISTRY",
            help="kubernetes: push the image to REGISTRY (e.g. registry.example.org/me) and run it from there.",
        ),
    ] = None,
    import_into: Annotated[
        str | None,
        typer.Option(
            metavar="SOCKET",
            help="kubernetes: import the image into the containerd at SOCKET (the node's, on this machine).",
        ),
    ] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="kubernetes: the demo's API as pods reach it (http://ADDRESS:PORT); it listens on PORT."
        ),
    ] = None,
) -> None:
    if runtime not in ("process", "container"):
        raise CliError(f"--runtime must be process or container, not {runtime!r}", exit_code=2)
    if backend not in ("local", "slurm", "kubernetes"):
        raise CliError(f"--backend must be local, slurm or kubernetes, not {backend!r}", exit_code=2)
    kubernetes_only = {"--push-to": push_to, "--import-into": import_into, "--api-url": api_url}
    if backend != "kubernetes" and (given := [name for name, value in kubernetes_only.items() if value]):
        raise CliError(f"{', '.join(given)}: only with --backend kubernetes", exit_code=2)
    if push_to and import_into:
        raise CliError("--push-to and --import-into: one or the other (a registry, or this machine's containerd)", 2)
    listen_port = _port_of(api_url) if api_url else 0
    fdl = workflow or default_workflow()
    if not fdl.exists():
        raise CliError(f"{fdl} does not exist: pass --workflow examples/video-process/workflow.yaml", exit_code=2)
    try:
        services = load_fdl(fdl).services
    except FDLError as error:
        raise CliError(f"{fdl}: {error}", exit_code=2) from None
    with tempfile.TemporaryDirectory(prefix="conveyor-demo-") as scratch:
        root = data_dir or Path(scratch) / "data"
        settings = Settings(data_dir=root, api={"port": 0}, storage={"s3_port": 0}, local={"runtime": runtime})
        if backend == "slurm":
            settings.backend = "slurm"
            settings.slurm.enabled = True
        if backend == "kubernetes":
            settings.backend = "kubernetes"
            settings.kubernetes.enabled = True
            # The demo's own API, never the one a configured `conveyor up` is reached at.
            settings.api.public_url = None
            settings.kubernetes.api_url = api_url
            if api_url:
                settings.api.host, settings.api.port = "0.0.0.0", listen_port
            services = _images_on_the_cluster(settings, services, push_to, import_into)
        ok = _run_demo(settings, services, Path(scratch), seconds, timeout)
    _say_where_results_are(data_dir)
    if not ok:
        raise typer.Exit(1)


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if parts.scheme != "http" or not parts.hostname or not port:
        raise CliError(
            f"--api-url must be http://ADDRESS:PORT (an address of this machine the pods reach), not {url!r}", 2
        )
    return port


def _images_on_the_cluster(
    settings: Settings, services: list[Any], push_to: str | None, import_into: str | None
) -> list[Any]:
    """Push or import the services' images (see conveyor.demo.images); the services, renamed when pushed.

    With neither option, stop before anything starts when no node has an image that nobody can pull."""
    from conveyor.backends.kubernetes import connection
    from conveyor.demo import images

    try:
        api_client = connection.api_client(settings.kubernetes)
    except BackendUnavailable as error:
        raise CliError(f"--backend kubernetes: {error}", exit_code=1) from None
    names = sorted({s.image for s in services})
    try:
        if push_to or import_into:
            client, url = images.engine_client(settings.local.docker_host)
            renamed = {}
            for image in names:
                if push_to:
                    with render.err.status(f"pushing {image} to {push_to} ..."):
                        renamed[image] = images.push_to(client, url, image, push_to)
                    render.note(f"pushed {image} as {renamed[image]}; the nodes pull it from there")
                else:
                    assert import_into is not None
                    with render.err.status(f"importing {image} into the containerd at {import_into} ..."):
                        images.import_into(client, url, image, import_into)
                    render.note(f"imported {image} into the containerd at {import_into} (namespace k8s.io)")
            return [s.model_copy(update={"image": renamed.get(s.image, s.image)}) for s in services]
    except images.ImageDeliveryError as error:
        raise CliError(str(error), exit_code=1) from None
    _check_nodes_have(api_client, names)
    return services


def _check_nodes_have(api_client: Any, names: list[str]) -> None:
    from kubernetes import client

    from conveyor.demo import images

    try:
        nodes = client.CoreV1Api(api_client).list_node(_request_timeout=30).items
    except Exception as error:  # RBAC may not allow it: the pod watch still fails a job that cannot pull
        render.warn(f"could not list the cluster's nodes to look for the demo's image ({error.__class__.__name__})")
        return
    for image in names:
        missing = images.missing_on_nodes(nodes, image)
        if missing and image.startswith("localhost/"):
            raise CliError(
                f"no node of the cluster has {image}, and no registry serves a localhost/ image: "
                "build it (examples/video-process/build-image.sh), then run the demo with --push-to REGISTRY "
                "(a registry the nodes pull from) or --import-into SOCKET (the node's containerd on this machine), "
                "or load it into the nodes yourself (kind load docker-image, minikube image load)",
                exit_code=1,
            )
        if missing:
            render.warn(f"no node reports {image}: the nodes pull it (a job fails if they cannot)")


def _say_where_results_are(kept: Path | None) -> None:
    if kept is None:
        render.note(
            "the frames and results (video/frames/, video/results/) went with the demo's temporary store; "
            "to keep them: conveyor demo --demo-dir DIR"
        )
        return
    render.note(
        f"the frames and results are in video/frames/ and video/results/ of the store under {kept}: "
        f"conveyor up --data-dir {kept}, then conveyor get video/results/ ./results"
    )


def _run_demo(settings: Settings, services: list[Any], scratch: Path, seconds: int, timeout: float) -> bool:
    from conveyor.backends.local.backend import LocalBackend
    from conveyor.demo.media import expected_frame_count, make_demo_video
    from conveyor.platform.platform import Platform  # the whole server: loaded only to run it

    platform = Platform(settings)
    with render.err.status("starting a private Conveyor ..."):
        platform.start()
    runs_on = platform.backends[settings.backend].describe()
    render.note(f"Conveyor up at {platform.api_url} (S3 {platform.s3_endpoint}); jobs run as {runs_on}")
    try:
        if settings.backend == "kubernetes" and (unreachable := platform.backends["kubernetes"].notices()):
            # Pods that cannot reach the API would wait out their deadline: say it now instead.
            hint = "for the demo: --api-url http://ADDRESS:PORT, an address of this machine the pods reach"
            raise CliError(f"{'; '.join(unreachable)}; {hint}", exit_code=1)
        local = platform.backends["local"]
        if isinstance(local, LocalBackend) and local.runs_containers:
            _check_images(local, services)
        connection = Connection(platform.api_url, platform.credentials.admin_user, platform.credentials.admin_password)
        with ConveyorClient(connection) as client:
            answer = client.apply([s.model_dump(mode="json") for s in services])
            render.note(f"deployed {', '.join(answer['created'] + answer['updated'])}")
            with render.err.status(f"making a {seconds} s video from scikit-image's pictures ..."):
                video = make_demo_video(scratch / "demo.mp4", seconds=seconds)
            store = client.storage()
            store.upload(video, ObjectRef.parse(INPUT_PREFIX + video.name))
            frames = expected_frame_count(seconds)
            render.note(f"uploaded {video.name} to {INPUT_PREFIX}: expecting 1 + {frames} jobs")
            # A job that failed for good leaves fewer jobs than expected: stop once nothing moves for 30 s.
            counts = wait_for_jobs(client, [s.name for s in services], 1 + frames, timeout, settled_s=30.0)
            jobs = client.jobs(limit=10_000)
            _print_summary(jobs, [s.name for s in services])
            return _verify(store, frames, counts)
    except ProblemsError as error:
        raise CliError(f"the workflow was refused: {error}", exit_code=2) from None
    finally:
        with render.err.status("stopping ..."):
            platform.stop()


def _check_images(local: LocalBackend, services: list[Any]) -> None:
    for image in sorted({s.image for s in services}):
        try:
            local.runner.ensure_image(image)
        except ImageError as error:
            raise CliError(f"{error}\nbuild it first: examples/video-process/build-image.sh", exit_code=1) from None


def _print_summary(jobs: list[dict[str, Any]], services: list[str]) -> None:
    by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:
        by_service[job["service"]].append(job)
    rows = []
    for name in services:
        mine = by_service.get(name, [])
        durations = [
            (datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["started_at"])).total_seconds()
            for j in mine
            if j["started_at"] and j["finished_at"]
        ]
        rows.append(
            (
                name,
                sum(j["state"] == "succeeded" for j in mine),
                sum(j["state"] in ("failed", "timed_out", "cancelled", "dead") for j in mine),
                render.seconds(statistics.mean(durations)) if durations else "",
                sum(len(j["outputs"]) for j in mine),
            )
        )
    render.table("Demo summary", ["service", "succeeded", "failed", "mean duration", "outputs written"], rows)
    for job in jobs:
        if job["state"] != "succeeded":
            render.warn(
                f"{job['job_id']} {job['state']}: {job['message']}  (conveyor logs {job['service']} {job['job_id']})"
            )


def _verify(store: S3Provider, frames: int, counts: dict[str, int]) -> bool:
    """Every frame must exist, and for each its annotated image and its JSON result."""
    frame_keys = [i.ref.key for i in store.list("video", "frames/") if i.ref.key.endswith(".jpg")]
    results = {i.ref.key for i in store.list("video", "results/")}
    missing = []
    faces_in = 0
    for key in frame_keys:
        stem = Path(key).stem
        expected = [f"results/{stem}-annotated.jpg", f"results/{stem}.json"]
        missing += [k for k in expected if k not in results]
        if expected[1] in results:
            faces_in += _face_count(store, expected[1]) > 0
    if len(frame_keys) != frames:
        render.err.print(f"[red]expected {frames} frames, found {len(frame_keys)}[/red]")
    for key in missing:
        render.err.print(f"[red]missing output video/{key}[/red]")
    ok = len(frame_keys) == frames and not missing and not counts.get("timed_out_waiting")
    verdict = "[green]all expected outputs exist[/green]" if ok else "[red]some outputs are missing[/red]"
    render.out.print(f"{len(frame_keys)} frames, faces found in {faces_in}; {verdict}")
    return ok


def _face_count(store: S3Provider, key: str) -> int:
    with tempfile.NamedTemporaryFile() as scratch:
        store.download(ObjectRef(bucket="video", key=key), Path(scratch.name))
        return int(json.loads(Path(scratch.name).read_text()).get("count", 0))


def register(app: typer.Typer) -> None:
    app.command(help=DEMO_HELP)(demo)
