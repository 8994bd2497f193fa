"""kuberank's Kopf operator: a RerankerService becomes a Deployment, Service, HPA, PDB, PVC
and ServiceMonitor."""

API_GROUP = "kuberank.io"
API_VERSION = "v1alpha1"
KIND = "RerankerService"
PLURAL = "rerankerservices"
FIELD_MANAGER = "kuberank-operator"
