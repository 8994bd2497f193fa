"""kuberank's Kopf operator: RerankerService -> Deployment, Service, HPA, PDB, PVC, ServiceMonitor."""

API_GROUP = "kuberank.io"
API_VERSION = "v1alpha1"
KIND = "RerankerService"
PLURAL = "rerankerservices"
FIELD_MANAGER = "kuberank-operator"
