"""A kubeconfig for a GKE cluster that authenticates through `gke-gcloud-auth-plugin` (no static credentials).

The plugin (`gcloud components install gke-gcloud-auth-plugin`) turns the caller's gcloud credentials into a
short-lived token; the old `auth-provider: gcp` entry was removed from kubectl and client-go.
"""

from __future__ import annotations

import yaml

INSTALL_HINT = (
    "Install gke-gcloud-auth-plugin (gcloud components install gke-gcloud-auth-plugin), see "
    "https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin"
)


def gke_kubeconfig(context: str, endpoint: str, ca_certificate: str) -> str:
    """Kubeconfig YAML for one cluster: `endpoint` is the API server's IP or host, `ca_certificate` base64 PEM."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": f"https://{endpoint}",
                                                   "certificate-authority-data": ca_certificate}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
        "preferences": {},
        "users": [{
            "name": context,
            "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "gke-gcloud-auth-plugin",
                "installHint": INSTALL_HINT,
                "provideClusterInfo": True,
                "interactiveMode": "IfAvailable",
            }},
        }],
    }  # fmt: skip
    return yaml.safe_dump(doc, sort_keys=False)
