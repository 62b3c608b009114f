"""Shared-prompt scoring on a decoder of realistic shape: sharing on against off, and against vLLM.

    python -m bench.shared_prompts [--output DIR] [--seconds 30] [--model DECODER_DIR]

The model is `bench.decoder`'s 12-layer Llama (built on the spot unless --model is given). Items: 512-token
prompts, each with 16 responses of 64 tokens, from the bundled HH-RLHF texts, in the plain format.
Figures, in one run on this machine:
- `/best-of-n`, N = 16: p50 latency with sharing off ÷ on (one client);
- the GRPO pattern, as OpenRLHF sends it: 64 clients, one `/get_reward` item per request with its
  `prompts`, 8 samples per prompt arriving together: items/s on ÷ off, and ours ÷ the vLLM server
  (prefix caching on) on the same texts and load;
- the same item alone and in a group of 16: the largest reward difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import engines
from bench.__main__ import hh_items
from bench.loadgen import load
from bench.peer_runs import check_parity, launch, reference_rewards, shutdown, warm_up
from bench.peers import VLLMPeer
from bench.processes import free_port, start, stop

PROMPT_TOKENS, RESPONSE_TOKENS, N, GRPO_GROUP = 512, 64, 16, 8
BEST_OF_N_PROMPTS = 32


def make_items(model_dir: Path, prompts: int) -> list[dict[str, Any]]:
    """`prompts` x N (prompt, response) items; each prompt and response cut to its token length."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = " ".join(str(i["response"]) for i in hh_items(1500)).split()

    def cut(start: int, tokens: int) -> tuple[str, int]:
        """About `tokens` tokens of words from `start` on (the word list wraps around)."""
        count, text = 0, ""
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
            count += 64
            text = " ".join(words[(start + k) % len(words)] for k in range(count))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:tokens]
        return tokenizer.decode(ids).strip(), start + count

    items, position = [], 0
    for _ in range(prompts):
        prompt, position = cut(position, PROMPT_TOKENS)
        for _ in range(N):
            response, position = cut(position, RESPONSE_TOKENS)
            items.append({"prompt": prompt, "response": response})
    return items


def invariance(model_dir: Path, items: list[dict[str, Any]]) -> dict[str, float]:
    """Largest |alone - in a group of 16| and |shared - unshared| over one prompt's 16 items, float32."""
    from reward_model.formatting import RewardInput
    from reward_model.loading import LoadOptions, open_reward_model

    [model] = open_reward_model(model_dir, LoadOptions(dtype="float32")).members
    encoded = model.encode([RewardInput.from_prompt_response(i["prompt"], i["response"]) for i in items[:N]])
    ids, splits = [e.input_ids for e in encoded], model.prefix_lengths(encoded)
    grouped = model.forward(ids, splits)
    alone = [model.forward([x], [s])[0] for x, s in zip(ids, splits, strict=True)]
    whole = model.forward(ids)
    return {
        "split_at": splits[0],
        "alone_vs_group_max_abs": max(abs(a - b) for a, b in zip(alone, grouped, strict=True)),
        "shared_vs_whole_max_abs": max(abs(a - b) for a, b in zip(whole, grouped, strict=True)),
    }


def rendered(model_dir: Path, items: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The text our formatter scores for each item, and the prompt part it starts with."""
    from bench.peers import render_texts

    texts, fits = render_texts(model_dir, items)
    if not all(fits):
        raise SystemExit("error: an item does not fit the decoder's max_length")
    return texts, [t[: t.rindex(i["response"])].rstrip() for t, i in zip(texts, items, strict=True)]


class PrefixCachingVLLM(VLLMPeer):
    """vLLM's pooling server with automatic prefix caching asked for explicitly."""

    def command(self, model_dir: str | Path, port: int, dtype: str = "float32") -> list[str]:
        return [*super().command(model_dir, port, dtype), "--enable-prefix-caching"]


def vllm_grpo(
    model: Path, texts: list[str], items: list[dict[str, Any]], order: list[int], seconds: float, work: Path
) -> Any:
    """The GRPO pattern against vLLM's server, the same texts in the same `order`, after a parity check
    and a warm-up on the last prompt's texts, which the run never sends (so its prefix cache starts as
    cold as ours)."""
    peer = PrefixCachingVLLM("vllm", "vLLM 0.32 (prefix caching on)", "/classify")
    if not peer.installed:
        return {"skipped": "vLLM peer not installed (bash bench/install_peers.sh)"}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    print("vLLM: starting ...", flush=True)
    process = launch(peer, model, port, work)
    try:
        parity = check_parity(peer, base, texts[:4], reference_rewards(model, items[:4]))
        if not parity["ok"]:
            return {"parity": parity, "skipped": "rewards differ from ours"}
        warm_up(peer, base, texts[-N:], sizes=(1, 8))
        print("vLLM: GRPO pattern, 64 clients ...", flush=True)
        bodies = [peer.body([texts[i]]) for i in order]
        figures = load(peer.score_url(base), bodies, 64, seconds, work)
        return {"parity_max_abs_diff": parity["max_abs_diff"], "grpo": figures}
    finally:
        shutdown(process)


def report(results: dict[str, Any]) -> None:
    """Print the figures and the issue's ratios."""
    cpu = results["cpu"]
    print(f"\nCPU: {cpu['model']} (native bf16: {cpu['native_bf16']}), float32")
    inv = results["invariance"]
    print(
        f"split at {inv['split_at']} tokens; alone vs group of {N}: {inv['alone_vs_group_max_abs']:.2e}; "
        f"shared vs whole: {inv['shared_vs_whole_max_abs']:.2e}"
    )
    if "best_of_n_on" in results:
        on, off = results["best_of_n_on"], results["best_of_n_off"]
        print(
            f"best-of-n N={N}: p50 {off['p50_ms']:.0f} ms off, {on['p50_ms']:.0f} ms on: "
            f"off / on = {off['p50_ms'] / on['p50_ms']:.2f}"
        )
    if "grpo_on" not in results:
        return
    on, off = results["grpo_on"], results["grpo_off"]
    print(
        f"GRPO pattern: {off['items_per_s']:.2f} items/s off, {on['items_per_s']:.2f} on: "
        f"on / off = {on['items_per_s'] / off['items_per_s']:.2f} (errors {on['errors']}, {off['errors']})"
    )
    vllm = results.get("vllm", {}).get("grpo")
    if vllm:
        print(
            f"vLLM server, prefix caching on: {vllm['items_per_s']:.2f} items/s: "
            f"ours / vLLM = {on['items_per_s'] / vllm['items_per_s']:.2f}"
        )


def main() -> None:
    """Build or take the decoder, measure every scenario, write results.json and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.shared_prompts", description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default="bench-results")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--prompts",
        type=int,
        default=128,
        help="distinct prompts of the GRPO pattern; enough that none comes back during a run, as in a "
        "GRPO step (a prompt sent again would find a prefix cache still warm from its last visit)",
    )
    parser.add_argument("--peers", default="vllm", help="'vllm' or 'none'")
    parser.add_argument("--scenarios", default="best-of-n,grpo", help="which of best-of-n,grpo to run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    if args.model is None:
        from bench.decoder import build_decoder

        print("building the 12-layer decoder ...", flush=True)
        args.model = str(build_decoder(work / "decoder"))
    model = Path(args.model)
    # best-of-n's prompts, then the GRPO pattern's, then one for warm-ups: no prompt is in two of them
    items = make_items(model, BEST_OF_N_PROMPTS + args.prompts + 1)
    results: dict[str, Any] = {"cpu": engines.cpu_facts(), "model": str(model)}
    print("invariance ...", flush=True)
    results["invariance"] = invariance(model, items)
    texts, prompts = rendered(model, items)
    best_of_n = [
        {"prompt": items[k]["prompt"], "responses": [i["response"] for i in items[k : k + N]]}
        for k in range(0, BEST_OF_N_PROMPTS * N, N)
    ]
    order = [k + j for k in range(BEST_OF_N_PROMPTS * N, len(items) - N, N) for j in range(GRPO_GROUP)]
    grpo = [{"query": [texts[i]], "prompts": [prompts[i]]} for i in order]
    scenarios = set(args.scenarios.split(","))
    for sharing in ("on", "off"):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        flag = "--prefix-sharing" if sharing == "on" else "--no-prefix-sharing"
        command = [sys.executable, "-m", "app", "--model", str(model), "--port", str(port)]
        command += ["--log-level", "warning", "--dtype", "float32", flag]
        server = start(command, url, work / "serve.log")
        try:
            if "best-of-n" in scenarios:
                print(f"sharing {sharing}: best-of-n N={N} ...", flush=True)
                results[f"best_of_n_{sharing}"] = load(
                    f"{url}/best-of-n", best_of_n, 1, args.seconds * 4, work, max_requests=len(best_of_n)
                )
            if "grpo" in scenarios:
                print(f"sharing {sharing}: GRPO pattern, 64 clients ...", flush=True)
                results[f"grpo_{sharing}"] = load(f"{url}/get_reward", grpo, 64, args.seconds, work)
        finally:
            stop(server)
    if args.peers == "vllm" and "grpo" in scenarios:
        results["vllm"] = vllm_grpo(model, texts, items, order, args.seconds, work)
    report(results)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shared_prompts.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'shared_prompts.json'}")


if __name__ == "__main__":
    main()
