"""How Conveyor reaches the cluster: the kubeconfig the settings name, else the in-cluster service
account, else ~/.kube/config."""

from __future__ import annotations

from typing import Any

from conveyor.errors import BackendUnavailable
from conveyor.settings import KubernetesSettings

CLIENT_PIN = "kubernetes==35.0.0"


def api_client(config: KubernetesSettings) -> Any:
    """A `kubernetes.client.ApiClient`; BackendUnavailable says what to set when none can be built."""
    try:
        from kubernetes import client
        from kubernetes import config as kube_config
    except ImportError as error:
        raise BackendUnavailable(
            f"the Kubernetes backend needs the `kubernetes` client: pip install {CLIENT_PIN}"
        ) from error
    try:
        if config.kubeconfig is not None:
            return kube_config.new_client_from_config(str(config.kubeconfig), context=config.context)
        try:
            kube_config.load_incluster_config()
            return client.ApiClient()
        except kube_config.ConfigException:
            return kube_config.new_client_from_config(context=config.context)
    except (kube_config.ConfigException, OSError) as error:
        raise BackendUnavailable(f"no cluster found: {error}; set kubeconfig under [kubernetes]") from error
