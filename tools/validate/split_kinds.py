"""Split Kubernetes YAML into the inputs of each validator (scripts/validate-manifests.sh).

usage: split_kinds.py OUTDIR FILE...

Writes OUTDIR/core.yaml (built-in API groups: kubernetes-validate), OUTDIR/crd.yaml (every other
group: the @kubernetes-models validator, which fails on kinds it does not know) and OUTDIR/istio.yaml
(*.istio.io: the cloudcoil strict check). Documents without apiVersion/kind (values files, kustomize
configuration) are not Kubernetes objects and are dropped, as the Rust loader does.
"""

import sys
from pathlib import Path

import yaml

# Groups served by kube-apiserver itself; kubernetes-validate has schemas for these.
BUILTIN_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io",
    "storage.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io",
    "admissionregistration.k8s.io", "apiextensions.k8s.io", "certificates.k8s.io", "events.k8s.io",
    "flowcontrol.apiserver.k8s.io", "apiregistration.k8s.io", "resource.k8s.io",
}


def main() -> int:
    out, files = Path(sys.argv[1]), sys.argv[2:]
    buckets: dict[str, list] = {"core": [], "crd": [], "istio": []}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                    continue
                if doc["kind"] in ("Kustomization", "Component"):
                    continue
                group = doc["apiVersion"].rpartition("/")[0]
                if group in BUILTIN_GROUPS:
                    buckets["core"].append(doc)
                else:
                    buckets["crd"].append(doc)
                    if group.endswith(".istio.io"):
                        buckets["istio"].append(doc)
    out.mkdir(parents=True, exist_ok=True)
    for name, docs in buckets.items():
        with open(out / f"{name}.yaml", "w", encoding="utf-8") as fh:
            yaml.safe_dump_all(docs, fh, sort_keys=False)
    print(" ".join(f"{name}={len(docs)}" for name, docs in buckets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
