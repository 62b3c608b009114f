"""Every Prometheus metric the service exports, defined once, in a registry owned by one app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "reward"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
RATIO_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
REWARD_BUCKETS = (-10.0, -5.0, -3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
SPREAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """The service's metrics. Each app builds its own so that apps never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests_total",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_queue_wait_seconds",
            "Time an item waits in the batch queue before its forward pass",
            ["member"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            f"{PREFIX}_inference_duration_seconds",
            "Forward-pass time per batch, by ensemble member",
            ["member"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_items = Histogram(
            f"{PREFIX}_batch_size_items",
            "Items per forward pass",
            ["member"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            f"{PREFIX}_batch_size_tokens",
            "Padded tokens per forward pass (items x longest item)",
            ["member"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.padding_ratio = Histogram(
            f"{PREFIX}_batch_padding_ratio",
            "Share of a batch's tokens that are padding",
            ["member"],
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.real_tokens = Counter(
            f"{PREFIX}_batch_real_tokens_total",
            "Real (unpadded) tokens sent to the model",
            ["member"],
            registry=r,
        )
        self.padded_tokens = Counter(
            f"{PREFIX}_batch_padded_tokens_total",
            "Tokens sent to the model including padding",
            ["member"],
            registry=r,
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_queue_depth_items", "Items waiting in the batch queue", ["member"], registry=r
        )
        self.items_scored = Counter(f"{PREFIX}_items_scored_total", "Items scored and returned", registry=r)
        self.items_truncated = Counter(
            f"{PREFIX}_items_truncated_total", "Items truncated to fit the model's max length", registry=r
        )
        self.rejected = Counter(
            f"{PREFIX}_items_rejected_total", "Items refused because the queue was full", registry=r
        )
        self.reward_value = Histogram(
            f"{PREFIX}_value",
            "Distribution of returned rewards, to watch for drift",
            buckets=REWARD_BUCKETS,
            registry=r,
        )
        self.nonfinite = Counter(
            f"{PREFIX}_nonfinite_total", "Non-finite rewards produced by a model", ["member"], registry=r
        )
        self.disagreement = Histogram(
            f"{PREFIX}_ensemble_disagreement",
            "Standard deviation of member rewards per item",
            buckets=SPREAD_BUCKETS,
            registry=r,
        )
        self.out_of_memory = Counter(
            f"{PREFIX}_out_of_memory_total",
            "Batches that ran out of memory (each is split and retried)",
            ["member"],
            registry=r,
        )
        self.batch_token_limit = Gauge(
            f"{PREFIX}_batch_token_limit",
            "Token budget of one forward pass in force: lowered after out-of-memory errors, restored after",
            ["member"],
            registry=r,
        )
        self.ready = Gauge(f"{PREFIX}_ready", "1 once the model is loaded and warmed up", registry=r)
        self.prefix_tokens_saved = Counter(
            f"{PREFIX}_prefix_tokens_saved",
            "Prompt tokens not recomputed because another item in the batch shared the prefix",
            ["member"],
            registry=r,
        )
        self.prefix_cache_hits = Counter(
            f"{PREFIX}_prefix_cache_hits",
            "Prompts found among those kept from earlier batches (--prefix-cache-mb) instead of run again",
            ["member"],
            registry=r,
        )
        self.shared_prefix_items = Counter(
            f"{PREFIX}_shared_prefix_items",
            "Items scored after a prefix that another item of the same batch shared",
            ["member"],
            registry=r,
        )
        self.prefix_group_size = Histogram(
            f"{PREFIX}_prefix_group_size_items",
            "Items per distinct prefix in a batch (split items only)",
            ["member"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
