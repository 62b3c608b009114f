"""RLHF frameworks against a live server: TRL's GRPOTrainer for real, OpenRLHF's and veRL's exact calls,
vLLM's `/classify` shapes, and empty completions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from reward_client.trl import async_reward_function, reward_function
from reward_client.verl import compute_score

from tests.helpers import Server

QUESTION = "how do I bake bread?"
KNEAD = [{"prompt": QUESTION, "response": "knead it."}]


def served(server: Server, items: list[dict[str, Any]]) -> list[float]:
    with server.client() as http:
        response = http.post("/score", json={"items": items})
        assert response.status_code == 200, response.text
        return list(response.json()["rewards"])


def test_an_empty_completion_gets_a_reward_like_any_other(llama_server: Server):
    items = [{"prompt": QUESTION, "response": ""}, {"prompt": QUESTION, "response": "knead it."}]
    rewards = served(llama_server, items)
    assert all(math.isfinite(r) for r in rewards) and rewards[0] != rewards[1]
    with llama_server.client() as http:
        ranked = http.post("/best-of-n", json={"prompt": QUESTION, "responses": ["", "knead it."]}).json()
        compared = http.post("/compare", json={"prompt": QUESTION, "response_a": "", "response_b": "x"})
    assert ranked["rewards"] == pytest.approx(rewards, abs=1e-5)
    assert compared.status_code == 200
    reward = reward_function(llama_server.url)
    conversational = reward(
        prompts=[[{"role": "user", "content": QUESTION}]] * 2,
        completions=[[{"role": "assistant", "content": ""}], [{"role": "assistant", "content": "knead it."}]],
    )
    assert conversational == pytest.approx(rewards, abs=1e-5)


def test_openrlhf_request_shapes_including_the_empty_shard(llama_server: Server):
    prompt = f"<s><|user|>{QUESTION}</s><|assistant|>"
    with llama_server.client() as http:
        one = http.post(
            "/get_reward", json={"query": [prompt + "knead it.</s>"], "prompts": [prompt], "labels": [""]}
        )
        empty = http.post("/get_reward", json={"query": [], "prompts": [], "labels": []})
    assert one.status_code == 200 and set(one.json()) == {"rewards", "scores", "extra_logs"}
    assert one.json()["rewards"] == one.json()["scores"]
    assert one.json()["rewards"] == pytest.approx(served(llama_server, KNEAD), abs=1e-5)
    assert empty.status_code == 200
    assert empty.json() == {"rewards": [], "scores": [], "extra_logs": {}}


async def test_verl_compute_score_as_the_naive_reward_manager_calls_it(llama_server: Server):
    score = await compute_score(
        data_source="hh",
        solution_str="knead it.",
        ground_truth="",
        extra_info={"raw_prompt": [{"role": "user", "content": QUESTION}], "index": 0, "num_turns": 2},
        url=llama_server.url,
    )
    assert score == pytest.approx(served(llama_server, KNEAD)[0], abs=1e-5)
    with pytest.raises(ValueError, match="needs the prompt"):
        await compute_score(
            data_source="hh", solution_str="x", ground_truth="", extra_info={}, url=llama_server.url
        )


def test_vllm_classify_shapes(llama_server: Server):
    text = f"<s><|user|>{QUESTION}</s><|assistant|>knead it.</s>"
    raw = served(llama_server, KNEAD)[0]
    with llama_server.client() as http:
        plain = http.post(
            "/classify", json={"model": "anything", "input": text, "use_activation": False}
        ).json()
        batch = http.post("/classify", json={"input": [text, text]}).json()
        chat = http.post(
            "/classify",
            json={
                "messages": [
                    {"role": "user", "content": QUESTION},
                    {"role": "assistant", "content": "knead it."},
                ]
            },
        ).json()
        neither = http.post("/classify", json={"model": "x"})
    assert set(plain) == {"id", "object", "created", "model", "data", "usage"}
    assert plain["object"] == "list" and plain["model"] == "anything" and plain["id"].startswith("classify-")
    assert plain["data"] == [
        {"index": 0, "label": "LABEL_0", "probs": [pytest.approx(raw, abs=1e-5)], "num_classes": 1}
    ]
    assert plain["usage"]["prompt_tokens"] == plain["usage"]["total_tokens"] > 0
    assert [d["index"] for d in batch["data"]] == [0, 1]
    assert batch["data"][0]["probs"][0] == pytest.approx(1 / (1 + math.exp(-raw)), abs=1e-6)
    assert chat["data"][0]["probs"][0] == pytest.approx(1 / (1 + math.exp(-raw)), abs=1e-6)
    assert neither.status_code == 422 and neither.json()["error"]["type"] == "invalid_request"


@pytest.mark.slow
@pytest.mark.parametrize("conversational", [False, True], ids=["plain", "conversational"])
def test_trl_grpo_trains_two_steps_on_the_servers_rewards(
    llama_server: Server, tmp_path: Path, conversational: bool
):
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from tests.tiny_models import decoder_config, llama_tokenizer

    tokenizer = llama_tokenizer(chat_template=True, pad_token=True)
    config = decoder_config(LlamaConfig, tokenizer, bos_token_id=tokenizer.bos_token_id)
    policy = LlamaForCausalLM(config)
    questions = [QUESTION, "what is two plus two?", "name a prime.", "say hi."]
    rows = [{"prompt": [{"role": "user", "content": q}] if conversational else q} for q in questions]
    calls: list[tuple[Sequence[Any], Sequence[Any], list[float | None]]] = []
    adapter = async_reward_function(llama_server.url)

    async def reward_server(
        prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float | None]:
        rewards = await adapter(prompts=prompts, completions=completions, **kwargs)
        calls.append((prompts, completions, rewards))
        return rewards

    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[reward_server],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    steps = [log for log in trainer.state.log_history if "rewards/reward_server/mean" in log]
    assert len(steps) == 2 and len(calls) == 2
    for log, (prompts, completions, rewards) in zip(steps, calls, strict=True):
        items = [
            {"prompt": p, "response": c if isinstance(c, str) else c[0]["content"]}
            for p, c in zip(prompts, completions, strict=True)
        ]
        rescored = served(llama_server, items)  # plain HTTP, not through the adapter
        assert rewards == pytest.approx(rescored, abs=1e-5)
        assert log["rewards/reward_server/mean"] == pytest.approx(sum(rescored) / len(rescored), abs=1e-4)
        assert log["reward_server/failures"] == 0.0 and log["reward_server/latency_s"] > 0
