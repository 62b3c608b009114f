"""Tiny real models for tests: BERT-, Llama- and Qwen-style, with tokenizers trained on the spot.

Nothing is downloaded. The weights are random but real: they go through the same transformers code
paths as a production reward model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from reward_model.checkpoint import RewardMetadata, save_metadata

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Human: how do I bake bread? Assistant: Mix flour, water, salt and yeast, then knead it.",
    "I am sorry, but I cannot help with that request because it could hurt someone.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "Reward models score responses so that a policy can learn which answers people prefer.",
    "Sure! Here are three ideas: go for a walk, read a book, or call a friend.",
    "What is two plus two? Two plus two is four. Numbers 0 1 2 3 4 5 6 7 8 9.",
    "system user assistant message content role hello hi thanks please yes no maybe",
] * 20

LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
"""ChatML-shaped: no BOS, a newline after each role tag and after each turn's end."""


def bert_tokenizer() -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer that wraps single sequences in [CLS] ... [SEP], like BERT."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def llama_tokenizer(chat_template: bool = True, pad_token: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that prepends BOS, like Llama; no pad token unless asked."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=2048,
        pad_token="<pad>" if pad_token else None,
    )
    if chat_template:
        wrapped.chat_template = LLAMA_CHAT_TEMPLATE
    return wrapped


def save_bert(
    path: Path, *, seed: int = 0, max_length: int = 128, head_dim: int = 8, **metadata: object
) -> Path:
    """A 2-layer BERT reward model with a trained WordPiece tokenizer (vLLM needs head_dim >= 32)."""
    tokenizer = bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=4 * head_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(path, config, tokenizer, seed, max_length, metadata)


def save_llama(
    path: Path,
    *,
    seed: int = 0,
    max_length: int = 128,
    chat_template: bool = True,
    pad_token: bool = False,
    head_dim: int = 8,
    **metadata: object,
) -> Path:
    """A 2-layer Llama reward model (last-token pooling), byte-level BPE tokenizer (vLLM: head_dim >= 32)."""
    tokenizer = llama_tokenizer(chat_template=chat_template, pad_token=pad_token)
    config = decoder_config(LlamaConfig, tokenizer, head_dim, bos_token_id=tokenizer.bos_token_id)
    return _save(path, config, tokenizer, seed, max_length, metadata)


def save_qwen(path: Path, *, seed: int = 0, max_length: int = 128, head_dim: int = 8) -> Path:
    """A 2-layer Qwen2 reward model (biased q/k/v projections, last-token pooling), ChatML-style template."""
    tokenizer = llama_tokenizer(chat_template=False)
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    config = decoder_config(Qwen2Config, tokenizer, head_dim, pad_token_id=tokenizer.eos_token_id)
    return _save(path, config, tokenizer, seed, max_length, {})


def decoder_config(
    config_class: Any, tokenizer: PreTrainedTokenizerFast, head_dim: int = 8, **overrides: Any
) -> Any:
    """A 2-layer decoder config with 4 heads (2 key/value heads) over `tokenizer`; one label."""
    fields = {
        "vocab_size": len(tokenizer),
        "hidden_size": 4 * head_dim,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 512,
        "num_labels": 1,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return config_class(**{**fields, **overrides})


def _save(
    path: Path,
    config: object,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
    max_length: int,
    metadata: dict[str, object],
) -> Path:
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():  # a visible head, so rewards differ clearly between inputs
        head = model.score if hasattr(model, "score") else model.classifier
        head.weight.normal_(0.0, 1.0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    save_metadata(path, RewardMetadata.model_validate({"max_length": max_length, **metadata}))
    return path
