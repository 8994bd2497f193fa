"""kuberank's Kopf operator: a RerankerService becomes a Deployment, Service, HPA, PDB, PVC
and ServiceMonitor."""

from kuberank_contract import OPERATOR_NAME

API_GROUP = "kuberank.io"
API_VERSION = "v1alpha1"
KIND = "RerankerService"
PLURAL = "rerankerservices"
FIELD_MANAGER = OPERATOR_NAME
# The oldest Kubernetes whose API server accepts and acts on everything the operator, its
# charts and its manifests create: the server pods' `preStop` `sleep` action is on by default
# from 1.30 (alpha, off, in 1.29); CRD validation rules (CEL) are GA from 1.29. The charts'
# kubeVersion, the README and the tests' validation versions are checked against this.
MINIMUM_KUBERNETES_VERSION = "1.30"
