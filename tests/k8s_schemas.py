"""JSON schemas for the objects kubernetes-validate has none for: the custom resources (KEDA 2.20
`keda.sh_scaledobjects.yaml`, prometheus-operator 0.93 `monitoring.coreos.com_servicemonitors.yaml`)
and the Kustomization file. Each covers the fields deploy/kubernetes uses, as the CRD defines them, and
is closed to unknown fields, as kubectl's strict field validation is."""

from __future__ import annotations

from typing import Any

DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
MATCH_LABELS = {
    "type": "object",
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
    "required": ["matchLabels"],
    "additionalProperties": False,
}
METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def _closed(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _closed(
        {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": METADATA, "spec": spec},
        ["apiVersion", "kind", "metadata", "spec"],
    )


SCALING_RULES = _closed(
    {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": _closed(
                {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1},
                },
                ["type", "value", "periodSeconds"],
            ),
        },
    },
    [],
)
# The prometheus scaler reads these trigger metadata keys (KEDA pkg/scalers/prometheus_scaler.go).
PROMETHEUS_TRIGGER = _closed(
    {
        "type": {"const": "prometheus"},
        "name": {"type": "string"},
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "metadata": _closed(
            {
                "serverAddress": {"type": "string", "pattern": "^https?://"},
                "query": {"type": "string", "minLength": 1},
                "threshold": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                "activationThreshold": {"type": "string"},
                "ignoreNullValues": {"enum": ["true", "false"]},
                "namespace": {"type": "string"},
                "timeout": {"type": "string"},
            },
            ["serverAddress", "query", "threshold"],
        ),
    },
    ["type", "metadata"],
)
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): _resource(
        "keda.sh/v1alpha1",
        "ScaledObject",
        _closed(
            {
                "scaleTargetRef": _closed({"name": {"type": "string", "minLength": 1}}, ["name"]),
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "advanced": _closed(
                    {
                        "horizontalPodAutoscalerConfig": _closed(
                            {"behavior": _closed({"scaleUp": SCALING_RULES, "scaleDown": SCALING_RULES}, [])},
                            [],
                        )
                    },
                    [],
                ),
                "triggers": {"type": "array", "minItems": 1, "items": PROMETHEUS_TRIGGER},
            },
            ["scaleTargetRef", "triggers"],
        ),
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _closed(
            {
                "selector": MATCH_LABELS,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _closed(
                        {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": DURATION,
                            "scrapeTimeout": DURATION,
                        },
                        ["port"],
                    ),
                },
            },
            ["selector", "endpoints"],
        ),
    ),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): _closed(
        {
            "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
            "kind": {"const": "Kustomization"},
            "namespace": {"type": "string"},
            "resources": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
        ["apiVersion", "kind", "resources"],
    ),
}
