"""Reading the Kubernetes manifests in deploy/k8s/ as data, for tests/test_deploy_static.py.

    docs = load(K8S)                         # every object of every manifest, sub-folders included
    for where, pod in pod_specs(docs):       # every pod spec, whatever workload kind holds it
        ...
    allowed(policies, src, dst, 8101)        # would the NetworkPolicies let src open dst:8101?

The NetworkPolicy evaluator implements the subset of the API the manifests use (matchLabels
selectors, pod and namespace peers, numbered and named ports) and refuses anything else, so a
policy it cannot judge fails the tests instead of passing unchecked. ipBlock peers never match a
pod: they are written for addresses outside the cluster's private ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

# Where each workload kind keeps its pod spec. A kind that runs pods and is missing here fails
# test_every_manifest_kind_is_known, so no new workload escapes the pod checks.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
# Kinds that run no pod of their own.
PASSIVE_KINDS = frozenset(
    {
        "Namespace",
        "ConfigMap",
        "Service",
        "PersistentVolumeClaim",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "PodMonitor",
    }
)
CLUSTER_SCOPED_KINDS = frozenset({"Namespace"})


def manifest_files(folder: Path, *, recursive: bool = True) -> list[Path]:
    """The *.yaml files of folder (kustomization.yaml is kustomize's list, not an object)."""
    paths = folder.rglob("*.yaml") if recursive else folder.glob("*.yaml")
    return sorted(p for p in paths if p.name != "kustomization.yaml")


def load(folder: Path, *, recursive: bool = True) -> list[Doc]:
    """Every object in the manifests of folder (and its sub-folders, unless recursive=False)."""
    docs: list[Doc] = []
    for path in manifest_files(folder, recursive=recursive):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert {"apiVersion", "kind", "metadata"} <= set(doc), path
                docs.append(doc)
    return docs


def dig(doc: Doc, path: tuple[str, ...]) -> Any:
    value: Any = doc
    for key in path:
        value = value[key]
    return value


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    """("Kind/name", pod spec) for every object that runs pods."""
    return [
        (f"{d['kind']}/{d['metadata']['name']}", dig(d, POD_SPEC_PATHS[d["kind"]]))
        for d in docs
        if d["kind"] in POD_SPEC_PATHS
    ]


def pod_labels(doc: Doc) -> dict[str, str]:
    path = POD_SPEC_PATHS[doc["kind"]]
    return dict(dig(doc, path[:-1])["metadata"]["labels"])


def containers(pod: Doc) -> list[Doc]:
    return [*pod.get("initContainers", []), *pod["containers"]]


# --- NetworkPolicy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicies see it: where it runs, its labels, its named ports."""

    name: str
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # container port names -> numbers

    @classmethod
    def of(cls, doc: Doc, namespace_labels: dict[str, str]) -> Pod:
        pod = dig(doc, POD_SPEC_PATHS[doc["kind"]])
        ports = {p["name"]: int(p["containerPort"]) for c in containers(pod) for p in c.get("ports", []) if "name" in p}
        namespace = doc["metadata"]["namespace"]
        labels = namespace_labels | {"kubernetes.io/metadata.name": namespace}
        return cls(doc["metadata"]["name"], namespace, pod_labels(doc), labels, ports)


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"the evaluator only knows matchLabels: {selector}"
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _peer_matches(peer: Doc, policy_namespace: str, pod: Pod) -> bool:
    assert set(peer) <= {"podSelector", "namespaceSelector", "ipBlock"}, peer
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], pod.namespace_labels)
    else:
        in_namespace = pod.namespace == policy_namespace
    return in_namespace and ("podSelector" not in peer or selects(peer["podSelector"], pod.labels))


def _port_matches(ports: list[Doc] | None, port: int, protocol: str, destination: Pod) -> bool:
    if not ports:
        return True
    for entry in ports:
        assert set(entry) <= {"port", "protocol"}, f"the evaluator does not know endPort: {entry}"
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None or wanted == port or (isinstance(wanted, str) and destination.ports.get(wanted) == port):
            return True
    return False


def _direction_allows(
    policies: list[Doc], subject: Pod, other: Pod, *, port: int, protocol: str, destination: Pod, direction: str
) -> bool:
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    applying = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and direction in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not applying:
        return True  # no policy selects the pod in this direction: everything is allowed
    for policy in applying:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(p, subject.namespace, other) for p in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol, destination):
                return True
    return False


def admits(policies: list[Doc], source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    """Would destination's ingress policies alone let source in?"""
    return _direction_allows(
        policies, destination, source, port=port, protocol=protocol, destination=destination, direction="Ingress"
    )


def allowed(policies: list[Doc], source: Pod, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    """Would a connection from source to destination:port pass both pods' policies?"""
    egress = _direction_allows(
        policies, source, destination, port=port, protocol=protocol, destination=destination, direction="Egress"
    )
    ingress = _direction_allows(
        policies, destination, source, port=port, protocol=protocol, destination=destination, direction="Ingress"
    )
    return egress and ingress
