#!/usr/bin/env python3
"""Prove a kubernetes-up.sh cluster runs real pods, with the Python `kubernetes` client, and time it.

Creates a namespace, then batch/v1 Jobs on the local image localhost/busybox:local (imagePullPolicy:
Never, hostNetwork: true): one `echo hello; exit 3` (must end Failed, exit code 3, log "hello"), one
`sleep 2; echo done` (must go Running, then Complete). Watches pods and Jobs, prints the times from
the Job's creation to: the pod's creation, its binding to the node, Running, its end, the Job's
condition. Deletes the namespace at the end. Exit status 0 when everything matched.

Usage: kubernetes-smoke.py KUBECONFIG [ROUNDS]   (needs `pip install kubernetes==35.0.0`)
"""

import sys
import time

from kubernetes import client, config, watch


def job(name, script):
    container = client.V1Container(
        name="main", image="localhost/busybox:local", image_pull_policy="Never", command=["sh", "-c", script])
    pod = client.V1PodSpec(restart_policy="Never", host_network=True, containers=[container],
                           termination_grace_period_seconds=0)
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=pod)))


def run(core, batch, ns, name, script):
    """Creates the Job, watches its pod and the Job to the end; returns (times, pod, job)."""
    t0 = time.monotonic()
    batch.create_namespaced_job(ns, job(name, script))
    times, pod = {}, None
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_pod, ns, label_selector=f"job-name={name}", timeout_seconds=120):
        pod, now = ev["object"], time.monotonic() - t0
        times.setdefault("pod created", now)
        if pod.spec.node_name:
            times.setdefault("pod bound", now)
        if pod.status.phase == "Running":
            times.setdefault("pod Running", now)
        if pod.status.phase in ("Succeeded", "Failed"):
            times.setdefault(f"pod {pod.status.phase}", now)
            w.stop()
    w = watch.Watch()
    for ev in w.stream(batch.list_namespaced_job, ns, field_selector=f"metadata.name={name}", timeout_seconds=60):
        j = ev["object"]
        done = [c.type for c in (j.status.conditions or []) if c.type in ("Complete", "Failed") and c.status == "True"]
        if done:
            times[f"job {done[0]}"] = time.monotonic() - t0
            w.stop()
    return times, pod, j


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    rounds = int(sys.argv[2]) if len(sys.argv) == 3 else 1
    config.load_kube_config(sys.argv[1])
    core, batch = client.CoreV1Api(), client.BatchV1Api()
    ns = f"smoke-{int(time.time())}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    # The namespace's default service account comes from the controller manager, a moment later.
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(ns).items and time.monotonic() < deadline:
        time.sleep(0.05)
    ok = True
    try:
        for r in range(rounds):
            times, pod, j = run(core, batch, ns, f"fail-{r}", "echo hello; exit 3")
            term = pod.status.container_statuses[0].state.terminated
            log = core.read_namespaced_pod_log(pod.metadata.name, ns)
            good = (pod.status.phase == "Failed" and term and term.exit_code == 3 and log == "hello\n"
                    and "job Failed" in times)
            ok &= bool(good)
            print(f"fail-{r}: phase={pod.status.phase} exit_code={term.exit_code if term else None} log={log!r} "
                  f"reason={term.reason if term else None} node={pod.spec.node_name} "
                  + " ".join(f"{k}={v:.2f}s" for k, v in times.items()) + ("" if good else "  MISMATCH"))
            times, pod, j = run(core, batch, ns, f"ok-{r}", "sleep 2; echo done")
            log = core.read_namespaced_pod_log(pod.metadata.name, ns)
            good = pod.status.phase == "Succeeded" and log == "done\n" and "job Complete" in times and "pod Running" in times
            ok &= bool(good)
            print(f"ok-{r}: phase={pod.status.phase} log={log!r} "
                  + " ".join(f"{k}={v:.2f}s" for k, v in times.items()) + ("" if good else "  MISMATCH"))
    finally:
        core.delete_namespace(ns)
    print("smoke: OK" if ok else "smoke: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
