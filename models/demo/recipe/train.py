#!/usr/bin/env python3
"""train.py — the demo model in the box: a small llama-family model with its own byte-level BPE
tokenizer and a chat template, trained on the King James Bible (public domain) from Debian's
`bible-kjv` packages, saved in the Hugging Face layout for `lmx convert`.

Where the text comes from (on a Debian machine): recipe/get_kjv.sh dumps bible-kjv-text's compressed
data through the `bible` program of bible-kjv into recipe/data/kjv.txt ("Genesis 1" headings, numbered
verses; wrapped lines are joined here).

Run (one H100: about three minutes; needs torch, transformers and tokenizers):
    python3 models/demo/train.py --text kjv.txt --out DIR [--seconds 150]

What it writes into DIR: the model (config.json, generation_config.json, model.safetensors in bf16),
the tokenizer (tokenizer.json, tokenizer_config.json, chat_template.jinja), heldout.txt (every 50th
chapter, never trained on) and train_log.json (the loss curve, the held-out loss and perplexity that
PyTorch measured in fp32, and every setting).

The chat form it learns: a user message holding a verse, the assistant answering with the verses
that follow it (the template is CHAT_TEMPLATE below); half of the training windows are plain text.
"""
import argparse
import json
import math
import os
import random
import re
import time

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{{ '<|eos|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SPECIALS = ["<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]


def read_chapters(path):
    """kjv.txt (the `bible` reader's output) → [(title, [verse text, ...]), ...] in canonical order."""
    chapters, title, verses = [], None, []
    head = re.compile(r"^(\S.*\S) (\d+)$")      # "Genesis 1", "1 Samuel 3"
    verse = re.compile(r"^\s+(\d+) (.*)$")      # "  1 In the beginning ..."
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            m = verse.match(line)
            if m and title is not None:
                verses.append(m.group(2).strip())
                continue
            m = head.match(line)
            if m:
                if title is not None and verses:
                    chapters.append((title, verses))
                title, verses = line.strip(), []
            elif verses:                          # a wrapped verse (narrow output)
                verses[-1] += " " + line.strip()
    if title is not None and verses:
        chapters.append((title, verses))
    if len(chapters) < 1000:
        raise SystemExit(f"{path}: {len(chapters)} chapters; expected the whole Bible (1189)")
    return chapters


def chapter_text(title, verses):
    return title + "\n" + "\n".join(f"{i + 1} {v}" for i, v in enumerate(verses)) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=150.0, help="training wall-clock budget")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a few steps on the CPU: checks the script")
    a = ap.parse_args()

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    random.seed(a.seed)
    torch.manual_seed(a.seed)
    dev = "cuda" if torch.cuda.is_available() and not a.tiny else "cpu"
    chapters = read_chapters(a.text)
    train_ch = [c for i, c in enumerate(chapters) if i % 50 != 25]
    held_ch = [c for i, c in enumerate(chapters) if i % 50 == 25]
    os.makedirs(a.out, exist_ok=True)
    held_text = "".join(chapter_text(*c) for c in held_ch)
    with open(os.path.join(a.out, "heldout.txt"), "w", encoding="utf-8") as f:
        f.write(held_text)

    # ---- tokenizer: byte-level BPE, BOS added to plain text by the post-processor ----
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((chapter_text(*c) for c in train_ch), trainer=trainer)
    bos, eos = tok.token_to_id("<|bos|>"), tok.token_to_id("<|eos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B",
                                                       special_tokens=[("<|bos|>", bos)])
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>",
                                     pad_token="<|eos|>")
    hf_tok.chat_template = CHAT_TEMPLATE

    # ---- training stream: plain chapters (with BOS) and chat samples (verse → following verses) ----
    def chat_sample(verses, i, n_next):
        msgs = [{"role": "user", "content": verses[i]},
                {"role": "assistant", "content": " ".join(verses[i + 1:i + 1 + n_next])}]
        return hf_tok.apply_chat_template(msgs, tokenize=False)

    plain = [tok.encode(chapter_text(*c)).ids for c in train_ch]
    chats = []
    for title, verses in train_ch:
        for i in range(0, len(verses) - 1, 2):
            chats.append(tok.encode(chat_sample(verses, i, random.choice([1, 2])), add_special_tokens=False).ids)
    random.shuffle(chats)
    stream = []
    for p in plain:
        stream += p + [eos]
    n_plain = len(stream)
    for c in chats:
        if len(stream) >= 2 * n_plain:
            break
        stream += c
    data = torch.tensor(stream, dtype=torch.long)
    held = torch.tensor(tok.encode(held_text).ids, dtype=torch.long)
    print(f"chapters {len(train_ch)} train / {len(held_ch)} held out; tokens {len(stream)} "
          f"(plain {n_plain}); held-out tokens {len(held)}; vocab {tok.get_vocab_size()}", flush=True)

    # ---- model ----
    heads = max(1, a.hidden // 64)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=a.hidden, intermediate_size=a.hidden * 3,
                      num_hidden_layers=a.layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                      max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos)
    if a.tiny:
        cfg.num_hidden_layers, a.seq, a.batch = 2, 64, 4
    model = LlamaForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters, {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}",
          flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)

    def batch():
        ix = torch.randint(0, len(data) - a.seq - 1, (a.batch,))
        x = torch.stack([data[i:i + a.seq] for i in ix]).to(dev)
        y = torch.stack([data[i + 1:i + 1 + a.seq] for i in ix]).to(dev)
        return x, y

    @torch.no_grad()
    def held_loss(limit=None):
        """mean next-token NLL over the held-out text in windows of a.seq (fp32)"""
        model.eval()
        h = held if limit is None else held[:limit]
        tot, n = 0.0, 0
        for s in range(0, len(h) - 1, a.seq):
            x = h[s:s + a.seq + 1].to(dev)
            if len(x) < 2:
                break
            logits = model(x[None, :-1]).logits.float()
            tot += torch.nn.functional.cross_entropy(logits[0], x[1:], reduction="sum").item()
            n += len(x) - 1
        model.train()
        return tot / n

    log = {"settings": vars(a), "n_params": n_params, "steps": []}
    t0, step, best = time.time(), 0, float("inf")
    budget = 5.0 if a.tiny else a.seconds
    warm = 100
    while time.time() - t0 < budget:
        frac = min(1.0, (time.time() - t0) / budget)
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch()
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x).logits.float().view(-1, cfg.vocab_size), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0 or a.tiny:
            hl = held_loss(limit=8192)
            log["steps"].append({"step": step, "s": round(time.time() - t0, 1), "lr": lr, "train_loss": loss.item(),
                                 "heldout_loss_8k": hl})
            print(f"step {step} {time.time() - t0:.0f}s lr {lr:.2e} loss {loss.item():.3f} held {hl:.3f}", flush=True)
            if hl < best:
                best = hl
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if log["steps"]:
        model.load_state_dict(best_state)

    # ---- save: bf16 weights in the Hub layout, the fp32 held-out figure of those bf16 weights ----
    model = model.to(torch.bfloat16).to(torch.float32)  # evaluate exactly what is saved
    hl = held_loss()
    log["heldout"] = {"tokens": len(held), "nll": hl, "perplexity": math.exp(hl),
                      "note": "fp32 evaluation of the saved bf16 weights, windows of --seq tokens, BOS at the start"}
    print(f"held-out: {len(held)} tokens, nll {hl:.4f}, perplexity {math.exp(hl):.3f}", flush=True)
    model.to(torch.bfloat16).save_pretrained(a.out)
    hf_tok.save_pretrained(a.out)
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    try:  # a look at the result; the files above are already written
        with torch.no_grad():
            p = tok.encode("In the beginning").ids
            out = model.to(torch.float32).generate(torch.tensor([p], device=dev), max_new_tokens=40, do_sample=False)
            print("greedy:", tok.decode(out[0].tolist()), flush=True)
    except Exception as e:  # noqa: BLE001
        print("greedy generation failed:", e, flush=True)


if __name__ == "__main__":
    main()
