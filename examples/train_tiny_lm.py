"""Train a small Llama-style RoPE language model on CPU, on text that ships with Python, for `posemb extrapolate`.

    HF_HUB_OFFLINE=1 .venv/bin/python examples/train_tiny_lm.py            # examples/tiny-lm/, a few minutes
    .venv/bin/python examples/train_tiny_lm.py --steps 0 --out /tmp/lm      # the same model untrained (seconds)

No causal LM with real weights ships offline, so this makes one: a byte-level BPE tokenizer (2048 tokens) and a
4-layer Llama (hidden 128, 4 heads of 32 dimensions: 16 rotary pairs, RoPE base 10000, about 1.1 million
parameters) trained at a context of 128 tokens on `pydoc_data.topics` (the text of Python's `help()` topics). The
last tenth of the topics (in key order) is held out and written to `heldout.txt` beside the model, for evaluation
at lengths the model never saw. The folder is an ordinary Hugging Face model folder (config.json, model.safetensors,
tokenizer files): `posemb extrapolate examples/tiny-lm/heldout.txt -m examples/tiny-lm --lengths 128,256,512,1024`.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

CONTEXT = 128  # the training length: every window the model sees has 128 tokens, positions 0..127
VOCAB = 2048
HELD_OUT = 0.1
DEFAULT_OUT = Path(__file__).resolve().parent / "tiny-lm"


def topics_text() -> tuple[str, str]:
    """(training text, held-out text): the `pydoc_data.topics` entries in key order, the last tenth held out."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    cut = int(len(keys) * (1 - HELD_OUT))
    return "\n\n".join(topics[k] for k in keys[:cut]), "\n\n".join(topics[k] for k in keys[cut:])


def train_tokenizer(text: str, vocab: int = VOCAB):
    """A byte-level BPE trained on the training text, as a transformers fast tokenizer (no special tokens are added
    to a text: `posemb extrapolate` reads one stream of tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(text.split("\n\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_model(vocab: int, seed: int, hidden: int = 128, layers: int = 4, heads: int = 4):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=CONTEXT,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    return LlamaForCausalLM(config)


def train(model, ids, steps: int, batch: int, seed: int, lr: float = 3e-3) -> list[float]:
    """AdamW on random 128-token crops of the training tokens, cosine learning rate after 20 warm-up steps."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    losses, start = [], time.monotonic()
    model.train()
    for step in range(steps):
        scale = min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in optimiser.param_groups:
            group["lr"] = lr * max(scale, 0.05)
        starts = torch.randint(0, len(ids) - CONTEXT, (batch,), generator=generator)
        window = torch.stack([ids[s : s + CONTEXT] for s in starts.tolist()])
        loss = model(input_ids=window, labels=window).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss:.3f}  {time.monotonic() - start:.0f} s", flush=True)
    model.eval()
    return losses


def build(out: Path, steps: int, batch: int = 32, seed: int = 0) -> Path:
    """Tokenizer, model (trained for `steps` steps; 0: random weights), held-out text: all in the folder `out`."""
    import torch

    training, held_out = topics_text()
    tokenizer = train_tokenizer(training)
    model = make_model(len(tokenizer), seed)
    params = sum(p.numel() for p in model.parameters())
    if steps:
        ids = torch.tensor(tokenizer(training, add_special_tokens=False)["input_ids"])
        print(f"{params / 1e6:.2f}M parameters, {len(ids)} training tokens, context {CONTEXT}", flush=True)
        train(model, ids, steps, batch, seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "heldout.txt").write_text(held_out, encoding="utf-8")
    print(f"Wrote {out} (held-out text: {out / 'heldout.txt'})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write")
    parser.add_argument("--steps", type=int, default=400, help="training steps (0: save the untrained model)")
    parser.add_argument("--batch", type=int, default=32, help="windows of 128 tokens per step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    build(args.out, args.steps, args.batch, args.seed)


if __name__ == "__main__":
    main()
