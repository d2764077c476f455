"""A tiny causal LM built on the spot, for tests of the local-model providers.

A word-level tokenizer trained on a few sentences and a 2-layer GPT-2 trained
for a few seconds on CPU, saved with ``save_pretrained`` like any model a
user downloads, and loaded back through the provider's own code path. The
training makes greedy output predictable:

* chat (any user message) → ``ANSWER`` then end-of-sequence;
* a completion prompt of cycle letters (``"c d e"``) → the cycle continues
  (``f g h a b …``) and never ends on its own: long generations for
  cancellation and concurrency tests.
"""

from __future__ import annotations

from pathlib import Path

ANSWER = "one two three four five six seven eight nine ten"
CYCLE = ["a", "b", "c", "d", "e", "f", "g", "h"]
WORDS = [*ANSWER.split(), *CYCLE, "hello", "hi", "there", "how", "are", "you", "the", "fox"]
SPECIALS = ["<pad>", "<eos>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
EOS_ID = SPECIALS.index("<eos>")  # special tokens take the first ids, in order
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CONTEXT = 2048


def build_tiny_chat_model(directory: Path, steps: int = 300) -> Path:
    """Train and save the tiny model and its tokenizer into ``directory``; returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    # A byte-level BPE like GPT-2's, trained on the words the model will see.
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([" ".join(WORDS)] * 4 + [ANSWER, " ".join(CYCLE)], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=SPECIALS[3:])
    tokenizer.chat_template = CHAT_TEMPLATE
    vocab = tokenizer.get_vocab()

    texts = [f"<|user|>{q}<|assistant|>{ANSWER}<eos>"
             for q in ("hello", "hi there", "how are you", "hello hello", "the quick brown fox",
                       "a b c", "one")]
    texts.append(f"<|system|>hi<|user|>hello<|assistant|>{ANSWER}<eos>")
    texts += [" ".join(CYCLE[(start + i) % len(CYCLE)] for i in range(48))
              for start in range(len(CYCLE))]
    encoded = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, encoded))
    inputs = torch.full((len(encoded), width), vocab["<pad>"])
    labels = torch.full((len(encoded), width), -100)
    for row, ids in enumerate(encoded):
        inputs[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(ids)] = torch.tensor(ids)

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=64, n_layer=2,
                        n_head=4, bos_token_id=vocab["<eos>"], eos_token_id=vocab["<eos>"],
                        pad_token_id=vocab["<pad>"])
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    mask = (inputs != vocab["<pad>"]).long()
    for _ in range(steps):
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.generation_config.do_sample = False
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
