"""How `conveyor demo --backend kubernetes` gets the demo's image to the cluster's nodes.

The image is built on this machine (examples/video-process/build-image.sh) into the Docker or podman
engine the local backend uses ([local] docker_host, DOCKER_HOST, then the standard sockets). From there:

- push_to(REGISTRY): tag it REGISTRY/<name>:<tag> and push it (the engine's credentials, e.g. `docker
  login`); the services then run that name and the nodes pull it. For any cluster.
- import_into(SOCKET): stream `docker save` of it into `ctr -a SOCKET -n k8s.io images import -`: for a
  node whose containerd runs on this machine (a one-machine cluster, like the tests').
- neither: the nodes must have it already (kind load docker-image, minikube image load, ...);
  missing_on_nodes() tells from the images the nodes report, so the demo can say so before any job runs.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from typing import Any

from conveyor.errors import BackendUnavailable

BUILD_HINT = "build it first: examples/video-process/build-image.sh"


class ImageDeliveryError(Exception):
    """The image could not be found, pushed or imported; the message says what to do."""


def engine_client(docker_host: str | None) -> tuple[Any, str]:
    """A Docker SDK client of the first engine that answers (as the local backend finds it), and its URL."""
    from conveyor.runners.docker import DockerRunner

    advice = "Start dockerd or `podman system service`, or set DOCKER_HOST or [local] docker_host"
    try:
        runner = DockerRunner.discover(docker_host, advice=advice)
    except BackendUnavailable as error:
        where = "the demo's image comes from the engine build-image.sh built it in"
        raise ImageDeliveryError(f"{where}: {error}") from error
    return runner.client, runner.base_url


def local_image(client: Any, url: str, image: str) -> Any:
    from docker.errors import DockerException, ImageNotFound

    try:
        return client.images.get(image)
    except ImageNotFound:
        raise ImageDeliveryError(f"image {image!r} is not in the engine at {url}: {BUILD_HINT}") from None
    except DockerException as error:
        raise ImageDeliveryError(f"the engine at {url} failed to inspect {image!r}: {error}") from None


def pushed_name(image: str, registry: str) -> str:
    """REGISTRY/<last path component of image>: localhost/conveyor-video-demo:1 -> REGISTRY/conveyor-video-demo:1."""
    return f"{registry.rstrip('/')}/{image.rsplit('/', 1)[-1]}"


def push_to(client: Any, url: str, image: str, registry: str) -> str:
    """Tag and push `image` to `registry`; the pushed name."""
    from docker.errors import DockerException

    target = pushed_name(image, registry)
    repository, _, tag = target.rpartition(":")
    if "/" in tag or not repository:  # a port, not a tag
        repository, tag = target, "latest"
    found = local_image(client, url, image)
    try:
        found.tag(repository, tag)
        for line in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line or "errorDetail" in line:
                detail = line.get("error") or line["errorDetail"].get("message", line)
                raise ImageDeliveryError(
                    f"pushing {target} failed: {detail} (log the engine in first: docker login / podman login "
                    f"{registry.split('/')[0]})"
                )
    except DockerException as error:
        raise ImageDeliveryError(f"pushing {target} through the engine at {url} failed: {error}") from None
    return target


def import_into(client: Any, url: str, image: str, socket: str) -> None:
    """Stream the image from the engine into the containerd at `socket` (namespace k8s.io, the kubelet's)."""
    from docker.errors import DockerException

    ctr = shutil.which("ctr")
    if ctr is None:
        raise ImageDeliveryError(
            "--import-into needs containerd's `ctr` on this machine (Debian: apt-get install containerd)"
        )
    found = local_image(client, url, image)
    # ctr unpacks what it imports (into the CRI's snapshotter): the kubelet runs it without a pull.
    argv = [ctr, "-a", socket, "-n", "k8s.io", "images", "import", "-"]
    importer = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert importer.stdin is not None and importer.stdout is not None
    stdout = importer.stdout
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(stdout.read()))
    reader.start()
    problem = None
    try:
        for chunk in found.save(named=True):
            importer.stdin.write(chunk)
    except BrokenPipeError:
        pass  # ctr gave up: its message says why
    except DockerException as error:
        problem = f"saving {image} from the engine at {url} failed: {error}"
    finally:
        with contextlib.suppress(BrokenPipeError):
            importer.stdin.close()
        code = importer.wait()
        reader.join()
    said = b"".join(output).decode(errors="replace").strip()
    if problem is None and code != 0:
        problem = f"ctr -a {socket} -n k8s.io images import failed ({code}): {said[-1000:]}"
    if problem:
        raise ImageDeliveryError(problem)


def normalized(image: str) -> str:
    """The reference as the kubelet reports it: docker.io/library/ for bare names, :latest when untagged."""
    first, _, rest = image.partition("/")
    if not rest:
        image = f"docker.io/library/{image}"
    elif "." not in first and ":" not in first and first != "localhost":
        image = f"docker.io/{image}"
    if "@" not in image and ":" not in image.rsplit("/", 1)[-1]:
        image += ":latest"
    return image


def missing_on_nodes(nodes: list[Any], image: str) -> bool | None:
    """True when no node reports `image`; None when that cannot be told (a node lists as many images as the
    kubelet reports at most, 50 by default, so the image may be there unlisted)."""
    wanted = normalized(image)
    for node in nodes:
        listed = (node.status.images or []) if node.status else []
        if any(normalized(name) == wanted for entry in listed for name in (entry.names or [])):
            return False
        if len(listed) >= 50:
            return None
    return True
