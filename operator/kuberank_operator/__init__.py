"""kuberank's Kopf operator: a RerankerService becomes a Deployment, Service, HPA, PDB, PVC
and ServiceMonitor."""

from kuberank_contract import OPERATOR_NAME

API_GROUP = "kuberank.io"
API_VERSION = "v1alpha1"
KIND = "RerankerService"
PLURAL = "rerankerservices"
FIELD_MANAGER = OPERATOR_NAME
