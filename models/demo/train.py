#!/usr/bin/env python3
"""train.py — the demo model of lmx (issue 12 item 3): a llama-family model of a few million
parameters with its own byte-level BPE tokenizer, trained on the King James Bible (public domain;
data/kjv.txt from get_kjv.sh), written in the Hugging Face Hub layout that `lmx convert` reads:

    OUT/config.json  model.safetensors (bf16)  tokenizer.json  tokenizer_config.json (chat template)
        generation_config.json  special_tokens_map.json  loss.tsv (step, train loss, held-out loss)
        eval.json (held-out loss and perplexity)

Meant for one H100 in at most 5 minutes (PyTorch 2.11, transformers 5.17, tokenizers 0.23, no
network). Then, on any machine:  lmx convert OUT models/demo/kjv-q4 --bits 4 --group-size 64

    python3 train.py --text data/kjv.txt --out out/kjv-bf16            # the real run (GPU)
    python3 train.py --text data/kjv.txt --out /tmp/t --steps 2 --tiny  # a CPU dry run

The split: every 20th chapter (by "Book N" heading) is held out, so held-out text is never seen.
"""
import argparse
import json
import math
import os
import random
import re
import sys
import time

SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}<|end|>\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>\n{{ m['content'] }}<|end|>\n"
    "{% else %}{{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kjv.txt"))
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--time-limit", type=float, default=270.0, help="seconds of training at most")
    p.add_argument("--tiny", action="store_true", help="a minute model and tokenizer (CPU dry run)")
    p.add_argument("--seed", type=int, default=1611)
    return p.parse_args()


def load_split(path, tiny):
    """Chapters in order (a heading "Book N" after a blank line starts one; a verse starts with
    spaces and its number, wrapped lines continue it); every 20th chapter is held out."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    chapters, verses, prev_blank = [], [], True
    for line in lines:
        if not line.strip():
            prev_blank = True
            continue
        if prev_blank and not line.startswith(" ") and re.match(r"^[1-3]? ?[A-Z][A-Za-z ]+ \d+$", line):
            if verses:
                chapters.append("\n".join(verses))
            verses = []
        elif re.match(r"^\s+\d+\s", line):
            verses.append(re.sub(r"^\s+\d+\s+", "", line).strip())
        elif verses:
            verses[-1] += " " + line.strip()
        prev_blank = False
    if verses:
        chapters.append("\n".join(verses))
    train = [c for i, c in enumerate(chapters) if i % 20 != 19]
    held = [c for i, c in enumerate(chapters) if i % 20 == 19]
    if tiny:
        train, held = train[:40], held[:4]
    return train, held


def train_tokenizer(train, vocab):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, min_frequency=2,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train, trainer=tr)
    return tok


def encode_all(tok, chapters, eos):
    ids = []
    for c in chapters:
        ids.extend(tok.encode(c).ids)
        ids.append(eos)
    return ids


def main():
    a = parse_args()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    random.seed(a.seed)
    torch.manual_seed(a.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if a.tiny:
        a.vocab, a.seq, a.batch = min(a.vocab, 512), min(a.seq, 64), min(a.batch, 4)
    train_ch, held_ch = load_split(a.text, a.tiny)
    t0 = time.time()
    tok = train_tokenizer(train_ch, a.vocab)
    eos = tok.token_to_id("<|endoftext|>")
    train_ids = torch.tensor(encode_all(tok, train_ch, eos), dtype=torch.long)
    held_ids = torch.tensor(encode_all(tok, held_ch, eos), dtype=torch.long)
    print(f"tokenizer: {tok.get_vocab_size()} tokens in {time.time() - t0:.1f}s; "
          f"train {len(train_ids)} tokens, held-out {len(held_ids)}", flush=True)

    if a.tiny:
        dims = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                    num_key_value_heads=1)
    else:  # ~6.5M parameters with a 4096 vocabulary (tied embeddings)
        dims = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
                    num_key_value_heads=2)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=max(a.seq, 1024),
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=eos,
                      eos_token_id=eos, pad_token_id=None, attention_bias=False, mlp_bias=False,
                      hidden_act="silu", head_dim=dims["hidden_size"] // dims["num_attention_heads"], **dims)
    model = LlamaForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters on {dev}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, min(100, a.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, a.steps)))))
    amp = dict(device_type="cuda", dtype=torch.bfloat16) if dev == "cuda" else None

    def batch(ids, n):
        ix = torch.randint(0, len(ids) - a.seq - 1, (n,))
        x = torch.stack([ids[i:i + a.seq] for i in ix])
        return x.to(dev)

    @torch.no_grad()
    def held_loss(max_windows=200):
        model.eval()
        tot, cnt = 0.0, 0
        for s in range(0, min(len(held_ids) - 1, max_windows * a.seq), a.seq):
            x = held_ids[s:s + a.seq + 1]
            if len(x) < 2:
                break
            x = x.unsqueeze(0).to(dev)
            with torch.autocast(**amp) if amp else torch.no_grad():
                out = model(input_ids=x[:, :-1], labels=x[:, :-1])
            # labels shift inside the model: n-1 predicted positions per window
            tot += out.loss.item() * (x.shape[1] - 2)
            cnt += x.shape[1] - 2
        model.train()
        return tot / max(cnt, 1)

    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "loss.tsv"), "w")
    log.write("step\ttrain_loss\theld_out_loss\tseconds\n")
    t_train = time.time()
    step = 0
    for step in range(1, a.steps + 1):
        x = batch(train_ids, a.batch)
        with torch.autocast(**amp) if amp else torch.enable_grad():
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        el = time.time() - t_train
        if step % 100 == 0 or step == a.steps or step == 1:
            hl = held_loss(20)
            log.write(f"{step}\t{loss.item():.4f}\t{hl:.4f}\t{el:.1f}\n")
            log.flush()
            print(f"step {step}: train {loss.item():.3f} held-out {hl:.3f} ({el:.0f}s)", flush=True)
        if el > a.time_limit:
            print(f"time limit reached at step {step}", flush=True)
            break
    hl = held_loss()
    ev = {"held_out_loss": hl, "held_out_perplexity": math.exp(hl), "steps": step,
          "train_seconds": time.time() - t_train, "parameters": n_params, "held_out_tokens": int(len(held_ids)),
          "split": "every 20th chapter held out", "data": "King James Bible, Debian bible-kjv-text 4.38 (public domain)"}
    json.dump(ev, open(os.path.join(a.out, "eval.json"), "w"), indent=2)
    print(json.dumps(ev), flush=True)

    model = model.to("cpu").to(torch.bfloat16)
    model.config.torch_dtype = "bfloat16"
    model.save_pretrained(a.out, safe_serialization=True)  # config.json, model.safetensors, generation_config
    tok.save(os.path.join(a.out, "tokenizer.json"))
    tc = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": cfg.max_position_embeddings,
          "bos_token": None, "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": None,
          "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False,
          "chat_template": CHAT_TEMPLATE,
          "added_tokens_decoder": {str(tok.token_to_id(s)): {"content": s, "special": True, "lstrip": False,
                                                             "rstrip": False, "normalized": False,
                                                             "single_word": False} for s in SPECIALS}}
    json.dump(tc, open(os.path.join(a.out, "tokenizer_config.json"), "w"), indent=2)
    json.dump({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "additional_special_tokens": SPECIALS[1:]},
              open(os.path.join(a.out, "special_tokens_map.json"), "w"), indent=2)
    gc = {"eos_token_id": [eos, tok.token_to_id("<|end|>")], "bos_token_id": eos, "do_sample": True,
          "temperature": 0.8, "top_p": 0.95}
    json.dump(gc, open(os.path.join(a.out, "generation_config.json"), "w"), indent=2)
    print(f"wrote {a.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
