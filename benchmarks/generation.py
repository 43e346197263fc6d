"""G2T generation on CPU: beam-4 sentences/s with the key/value cache against without it, by batch size.

    python benchmarks/generation.py --quick                      # under a minute on 2 CPU cores
    python benchmarks/generation.py --sentences 64 --repeats 3

The model is TranslationNetwork's mBART at the size of experiments/configs/SingleStream/
phoenix-2014t_g2t_scratch.yaml (2 + 2 layers x 512, 8 heads, FFN 2048, scaled embeddings), from random
weights, with a 3,000-word target vocabulary and 1,100 glosses entering through `inputs_embeds` as in
TranslationNetwork. Inputs are 12 glosses; every hypothesis is held to `--length` tokens (EOS barred
until then), so every way does the same amount of work. Each repeat generates the same sentences
with every (cache, batch size) pair, rotating the order; medians are printed with the ratio to
`use_cache=True` at batch 1.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import GenerationConfig, MBartConfig, MBartForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import THREADS_HELP, rotated  # noqa: E402

WORDS, GLOSSES, LANG, EOS, PAD = 3000, 1100, 3, 2, 1


def scratch_mbart() -> MBartForConditionalGeneration:
    config = MBartConfig(vocab_size=WORDS, d_model=512, encoder_layers=2, decoder_layers=2, encoder_attention_heads=8,
                         decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                         max_position_embeddings=256, scale_embedding=True, pad_token_id=PAD, eos_token_id=EOS,
                         bos_token_id=LANG, decoder_start_token_id=LANG, forced_eos_token_id=EOS)
    return MBartForConditionalGeneration(config).eval()


def sentences_per_second(model: MBartForConditionalGeneration, embed: torch.nn.Embedding, glosses: torch.Tensor,
                         batch: int, config: GenerationConfig) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(glosses), batch):
            ids = glosses[i : i + batch]
            model.generate(inputs_embeds=embed(ids) * 512**0.5, attention_mask=torch.ones_like(ids),
                           generation_config=config)
    return len(glosses) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--length", type=int, default=30, help="tokens per generated sentence")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.sentences, args.repeats, args.length, args.batch_sizes = 8, 1, 20, [1, 8]
    torch.manual_seed(0)
    model = scratch_mbart()
    embed = torch.nn.Embedding(GLOSSES, 512, padding_idx=0)
    glosses = torch.randint(1, GLOSSES, (args.sentences, 12))
    ways = [(cache, batch) for cache in (True, False) for batch in args.batch_sizes]
    rates: dict[tuple[bool, int], list[float]] = {way: [] for way in ways}
    for r in range(args.repeats):
        for cache, batch in rotated(ways, r):
            config = GenerationConfig(num_beams=4, max_length=args.length + 1, min_length=args.length + 1,
                                      length_penalty=1.0, early_stopping=True, do_sample=False, use_cache=cache,
                                      decoder_start_token_id=LANG, eos_token_id=EOS, pad_token_id=PAD)
            rates[cache, batch].append(sentences_per_second(model, embed, glosses, batch, config))
    base = statistics.median(rates[True, args.batch_sizes[0]])
    print(f"{args.sentences} sentences x {args.length} tokens, beam 4, {args.repeats} repeats (median), "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}:")
    for (cache, batch), values in rates.items():
        median = statistics.median(values)
        print(f"  use_cache={cache!s:<5} batch {batch:<3} {median:7.2f} sentences/s  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
