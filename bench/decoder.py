"""A decoder reward model of realistic shape for speed work: Llama-style, random weights, no download.

12 layers, hidden size 768, 12 heads, a 32k vocabulary; its byte-level BPE tokenizer is trained on the
bundled HH-RLHF texts on the spot, so it tokenizes real dialogue like a production tokenizer does.
The weights are random (seeded): right for speed, meaningless as rewards.
    python -m bench.decoder OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

VOCAB = 32000


def build_decoder(path: Path, *, layers: int = 12, hidden: int = 768, max_length: int = 1024) -> Path:
    """Write the checkpoint (model, tokenizer, reward.json) to `path` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForSequenceClassification, LlamaConfig, PreTrainedTokenizerFast

    from bench.__main__ import hh_items
    from reward_model.checkpoint import RewardMetadata, save_metadata

    texts = [str(i["response"]) for i in hh_items(4000)]
    texts += [m["content"] for i in hh_items(4000) for m in i["prompt"]]  # type: ignore[attr-defined]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="</s>", model_max_length=max_length
    )
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=2048,
        num_labels=1,
        bos_token_id=tok.token_to_id("<s>"),
        eos_token_id=tok.token_to_id("</s>"),
        pad_token_id=tok.token_to_id("</s>"),
    )
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    save_metadata(path, RewardMetadata(max_length=max_length))
    return path


if __name__ == "__main__":
    print(build_decoder(Path(sys.argv[1])))
