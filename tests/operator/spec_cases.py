"""One table of RerankerService specs and the CEL rule each breaks, run against cel-python and
spec.py (test_spec.py) and against the real API server (test_crd_on_apiserver.py)."""

from __future__ import annotations

HS_KEY = {"secretRef": {"name": "jwt"}}
API_KEYS = {"secretRef": {"name": "rerank-api-keys"}}

# (spec fields, the CEL message expected or None when valid)
CASES = [
    ({"auth": HS_KEY}, None),
    ({"auth": {"mode": "disabled"}}, None),
    ({"auth": {"jwksURL": "https://idp.example/jwks"}, "autoscaling": {"minReplicas": 4}}, None),
    (
        {"auth": HS_KEY, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        "minReplicas must not be greater",
    ),
    ({"auth": HS_KEY, "autoscaling": {"enabled": False, "minReplicas": 5, "maxReplicas": 2}}, None),
    ({}, "need exactly one key source"),
    ({"auth": {**HS_KEY, "jwksURL": "https://idp.example/jwks"}}, "need exactly one key source"),
    (
        {"auth": {"publicKeySecretRef": {"name": "pem"}, "jwksURL": "https://x/jwks"}},
        "exactly one key source",
    ),
    # resources.gpu and engine.parallelism say how the GPUs are used; extraArgs may not.
    ({"auth": HS_KEY, "resources": {"gpu": 4}, "engine": {"parallelism": "data"}}, None),
    ({"auth": HS_KEY, "engine": {"extraArgs": ["--enforce-eager", "--max-num-seqs 8"]}}, None),
    ({"auth": HS_KEY, "engine": {"extraArgs": ["--tensor-parallel-sizes-are-not-a-flag"]}}, None),
    *(
        (
            {"auth": HS_KEY, "resources": {"gpu": 2}, "engine": {"extraArgs": args}},
            "engine.extraArgs must not set --tensor-parallel-size",
        )
        for args in (
            ["--tensor-parallel-size 4"],
            ["--enforce-eager", "--tensor-parallel-size", "4"],
            ["-tp=2"],
            ["--data_parallel_size", "2"],
            ["-dp 2"],
            ["--data-parallel-size-local=2"],
            ["--pipeline-parallel-size 2"],
        )
    ),
    ({"auth": HS_KEY, "tls": {"secretName": "cert"}}, None),
    ({"auth": HS_KEY, "tls": {"issuerRef": {"name": "ca"}}}, None),
    ({"auth": HS_KEY, "tls": {}}, "tls needs exactly one of secretName or issuerRef"),
    (
        {"auth": HS_KEY, "tls": {"secretName": "cert", "issuerRef": {"name": "ca"}}},
        "tls needs exactly one of secretName or issuerRef",
    ),
    ({"auth": HS_KEY, "network": {}}, None),
    ({"auth": HS_KEY, "network": {"allowFrom": [], "metricsFrom": []}}, None),
    (
        {
            "auth": HS_KEY,
            "network": {
                "allowFrom": [
                    {"podSelector": {}, "namespaceSelector": {"matchLabels": {"team": "a"}}},
                    {"ipBlock": {"cidr": "10.0.0.0/8"}},
                ]
            },
        },
        None,
    ),
    ({"auth": HS_KEY, "network": {"allowFrom": [{}]}}, "a peer is podSelector and/or"),
    (
        {
            "auth": HS_KEY,
            "network": {"metricsFrom": [{"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}}]},
        },
        "a peer is podSelector and/or",
    ),
    # API keys: the key Secret in both key modes; a JWT key source in jwtOrApiKey only.
    ({"auth": {"mode": "apiKey", "apiKeys": API_KEYS}}, None),
    ({"auth": {"mode": "apiKey", "apiKeys": API_KEYS, **HS_KEY}}, None),  # ignored, not passed
    ({"auth": {"mode": "jwtOrApiKey", "apiKeys": API_KEYS, **HS_KEY}}, None),
    ({"auth": {"mode": "apiKey"}}, "need auth.apiKeys.secretRef"),
    ({"auth": {"mode": "jwtOrApiKey", **HS_KEY}}, "need auth.apiKeys.secretRef"),
    ({"auth": {"mode": "jwtOrApiKey", "apiKeys": API_KEYS}}, "need exactly one key source"),
    (
        {"auth": {"mode": "jwtOrApiKey", "apiKeys": API_KEYS, **HS_KEY, "jwksURL": "https://x/j"}},
        "need exactly one key source",
    ),
    ({"auth": {"mode": "jwt", "apiKeys": API_KEYS, **HS_KEY}}, None),  # keys unused in jwt mode
]
