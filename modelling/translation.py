"""TranslationNetwork (Gloss2Text): glosses -> spoken-language text with transformers' MBartForConditionalGeneration.

The mBART comes from a local `save_pretrained` folder (`pretrained_model_name_or_path`; never downloaded) or is
built from `overwrite_cfg` with random weights. Glosses enter the encoder through their own embedding
(`inputs_embeds`), which a pretrained model initialises with the mean of each gloss's subword embeddings
and `GlossEmbedding.gloss2embed_file` (a saved dict gloss -> vector) overrides gloss by gloss.
mBART's encoder scales token embeddings by `embed_scale` only for `input_ids`, so the gloss embeddings are
scaled here. Targets end with `</s> tgt_lang`; generation starts from `tgt_lang`, as MBart's shift does.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, MBartConfig, MBartForConditionalGeneration
from transformers.models.mbart.modeling_mbart import shift_tokens_right

from dataset.annotations import normalize_gloss
from dataset.text_tokenizer import TextTokenizer
from dataset.translation import TranslationVocab
from utils.checkpoint import load_checkpoint, load_weights
from utils.errors import CheckpointError, ConfigError, one_line, short_repr

log = logging.getLogger(__name__)
_SIZE_KEYS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
              "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings", "scale_embedding")


class TranslationNetwork(nn.Module):
    def __init__(self, cfg: dict[str, Any], vocab: TranslationVocab, generation: dict[str, Any]) -> None:
        super().__init__()
        text = vocab.text
        overrides = {k: v for k, v in cfg["overwrite_cfg"].items() if v is not None}
        pretrained = cfg["pretrained_model_name_or_path"]
        self.mbart = _pretrained_mbart(pretrained, overrides) if pretrained else _scratch_mbart(text, overrides)
        embeddings = self.mbart.config.vocab_size
        if len(text) > embeddings or (text.pruned and len(text) != embeddings):
            raise ConfigError(f"model.TranslationNetwork: the text tokenizer ({text.source}) has {len(text)} tokens"
                              f"{' after pruning' if text.pruned else ''}, the model {embeddings} embeddings")
        config = self.mbart.config
        self.embed_scale = config.d_model ** 0.5 if config.scale_embedding else 1.0
        self.gloss_embedding = nn.Embedding(vocab.num_gloss_ids, config.d_model, padding_idx=0)
        if pretrained:
            self._init_gloss_embedding(vocab)
        if cfg["GlossEmbedding"]["gloss2embed_file"]:
            self._load_gloss_embeddings(vocab, cfg["GlossEmbedding"]["gloss2embed_file"])
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=cfg["label_smoothing"])
        self.pad_id = text.pad_id
        self.generation = GenerationConfig(
            num_beams=generation["num_beams"], max_length=generation["max_length"],
            length_penalty=generation["length_penalty"], decoder_start_token_id=text.lang_id,
            eos_token_id=text.eos_id, pad_token_id=text.pad_id,
            do_sample=False, early_stopping=generation["num_beams"] > 1,  # beam search only: greedy refuses the flag
        )
        self.gloss_embedding.requires_grad_(not cfg["GlossEmbedding"]["freeze"])
        if cfg["freeze_txt_embed"]:  # the token embeddings, shared by encoder, decoder and output layer
            self.mbart.get_input_embeddings().requires_grad_(False)
        if cfg["load_ckpt"]:
            load_weights(self, cfg["load_ckpt"], "model.TranslationNetwork.load_ckpt")

    def _init_gloss_embedding(self, vocab: TranslationVocab) -> None:
        """Each gloss: the mean of its subwords' token embeddings; padding, <unk> and the end: mBART's own."""
        tokens = self.mbart.get_input_embeddings().weight.detach()
        text = vocab.text
        rows = [[text.pad_id]] + [text.subword_ids(g) or [text.unk_id] for g in vocab.glosses.tokens[1:]]
        rows[vocab.glosses.tokens.index(vocab.glosses.unk)] = [text.unk_id]
        rows.append([text.eos_id])
        with torch.no_grad():
            self.gloss_embedding.weight.copy_(torch.stack([tokens[ids].mean(0) for ids in rows]))

    def _load_gloss_embeddings(self, vocab: TranslationVocab, path: str) -> None:
        """Rows from a saved dict gloss -> vector (SLRT's gloss_embeddings.bin layout), glosses normalised as
        ours; the glosses it lacks keep their initial rows."""
        table = load_checkpoint(path)
        where = f"model.TranslationNetwork.GlossEmbedding.gloss2embed_file {path}"
        width = self.gloss_embedding.embedding_dim
        index = {g: i for i, g in enumerate(vocab.glosses.tokens)}
        found = 0
        with torch.no_grad():
            for gloss, vector in table.items():
                if not isinstance(gloss, str) or not torch.is_tensor(vector) or vector.shape != (width,):
                    raise CheckpointError(f"{where}: entry {short_repr(gloss)} is not a gloss mapped to a vector of "
                                          f"{width} values (d_model)")
                row = index.get(normalize_gloss(gloss))
                if row is not None:
                    self.gloss_embedding.weight[row] = vector
                    found += 1
        log.info("%s: %d of %d glosses found", where, found, len(vocab.glosses) - 2)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.forward_embeddings(self.gloss_embedding(batch["gloss_ids"]), batch["gloss_mask"], batch["labels"])

    def forward_embeddings(self, embeddings: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Label-smoothed loss of the `labels` given B x T x d_model encoder input embeddings (1 in `mask` where valid)."""
        outputs = self.mbart(inputs_embeds=embeddings * self.embed_scale, attention_mask=mask,
                             decoder_input_ids=shift_tokens_right(labels, self.pad_id))
        logits = outputs.logits
        return {"loss": self.loss_fn(logits.flatten(0, 1).float(), labels.flatten()), "logits": logits}

    @torch.no_grad()
    def decode(self, outputs: dict[str, Any], batch: dict[str, Any]) -> list[list[int]]:
        """Generated text token ids per sample (beam search with `testing.cfg.translation`)."""
        return self.generate(self.gloss_embedding(batch["gloss_ids"]), batch["gloss_mask"])

    @torch.no_grad()
    def generate(self, embeddings: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        generated = self.mbart.generate(inputs_embeds=embeddings * self.embed_scale, attention_mask=mask,
                                        generation_config=self.generation)
        return [row.tolist() for row in generated]


def _scratch_mbart(text: TextTokenizer, overrides: dict[str, Any]) -> MBartForConditionalGeneration:
    ids = {"vocab_size": len(text), "pad_token_id": text.pad_id, "eos_token_id": text.eos_id,
           "bos_token_id": text.lang_id, "decoder_start_token_id": text.lang_id, "forced_eos_token_id": text.eos_id}
    try:
        config = MBartConfig(**ids, **overrides)
        return MBartForConditionalGeneration(config)
    except ValueError as err:  # e.g. d_model not divisible by the heads
        raise ConfigError(f"model.TranslationNetwork.overwrite_cfg: {one_line(err)}") from None


def _pretrained_mbart(path: str, overrides: dict[str, Any]) -> MBartForConditionalGeneration:
    sizes = sorted(set(overrides) & set(_SIZE_KEYS))
    if sizes:
        raise ConfigError(f"model.TranslationNetwork.overwrite_cfg.{sizes[0]}: sizes come from the pretrained model "
                          f"{path}; with pretrained_model_name_or_path set only the dropout keys may be given")
    try:
        model = MBartForConditionalGeneration.from_pretrained(path, local_files_only=True, **overrides)
    except (OSError, ValueError) as err:
        raise ConfigError(f"model.TranslationNetwork.pretrained_model_name_or_path: {path} cannot be loaded as "
                          f"mBART: {one_line(err)}") from None
    log.info("mBART loaded from %s (%.1fM parameters)", path, sum(p.numel() for p in model.parameters()) / 1e6)
    return model
