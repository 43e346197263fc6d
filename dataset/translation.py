"""Gloss -> text pairs for Gloss2Text, from the sign annotation files (SLRT pickles, Phoenix CSVs, JSON lines).

Glosses are normalised as for Sign2Gloss (`normalize_gloss`) and looked up in the gloss vocabulary (unknown
ones become `<unk>`), followed by an end-of-glosses id. Texts are the annotations' as written: the
reference for scoring, and, tokenized, the training target.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from dataset.annotations import SignSample, gloss_vocabulary, load_annotations, oov_rate
from dataset.loader import start_batch
from dataset.text_tokenizer import TextTokenizer, load_pretrained, load_trained, train_tokenizer
from dataset.vocab import Vocabulary
from utils.errors import DataError

log = logging.getLogger(__name__)
TEXT_TOKENIZER_FILE = "text_tokenizer.json"  # a trained tokenizer, beside the run's checkpoints


@dataclass(frozen=True)
class TranslationVocab:
    """The gloss vocabulary (id 0, CTC's blank, pads here) and the text tokenizer of a G2T model."""

    glosses: Vocabulary
    text: TextTokenizer

    @property
    def gloss_eos(self) -> int:
        """The id after the last gloss: ends every gloss sequence."""
        return len(self.glosses)

    @property
    def num_gloss_ids(self) -> int:
        return len(self.glosses) + 1

    def decode(self, ids: Sequence[int]) -> str:
        return self.text.decode(ids)

    def to_state(self) -> dict[str, Any]:
        return {"glosses": self.glosses.to_state(), "text": self.text.to_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any], cfg: dict[str, Any]) -> TranslationVocab:
        return cls(Vocabulary.from_state(state["glosses"]), TextTokenizer.from_state(state["text"], pretrained_text(cfg)))


def build_translation_vocab(cfg: dict[str, Any], train: list[SignSample],
                            glosses: Vocabulary | None = None) -> TranslationVocab:
    """`glosses`, else those of `GlossTokenizer.gloss2id_file` or the train glosses; the text tokenizer of the
    pretrained model, else the one kept in `training.model_dir` (a resumed run), else one trained on the train texts."""
    network = cfg["model"]["TranslationNetwork"]
    if glosses is None:
        glosses = gloss_vocabulary(train, network["GlossTokenizer"]["gloss2id_file"])
    text_cfg = network["TextTokenizer"]
    pretrained = pretrained_text(cfg)
    kept = Path(cfg["training"]["model_dir"]) / TEXT_TOKENIZER_FILE
    if pretrained:
        text = load_pretrained(pretrained, text_cfg["tgt_lang"])
    elif kept.is_file():
        text = load_trained(kept, text_cfg["tgt_lang"])
        log.info("text tokenizer: %s, kept from the start of this run", kept)
    else:
        leaked = next((s.name for s in train if s.name.split("/", 1)[0] in ("dev", "test")), None)
        if leaked is not None:
            raise DataError(f"text tokenizer: sample {leaked!r} of data.train {cfg['data']['train']} is not from the "
                            "training split; train the tokenizer on the training split only")
        texts = [s.text for s in train if s.text is not None]
        if not texts:
            raise DataError(f"data.train {cfg['data']['train']}: no sample has a text to train the text tokenizer on")
        text = train_tokenizer(texts, text_cfg["model_type"], text_cfg["vocab_size"], text_cfg["tgt_lang"])
        text.save(kept)  # every process trains the same tokenizer; the write is atomic
        log.info("text tokenizer: %d tokens trained on %d train texts, saved to %s", len(text), len(texts), kept)
    return TranslationVocab(glosses, text)


def pretrained_text(cfg: dict[str, Any]) -> str | None:
    """The folder of the pretrained text tokenizer: TextTokenizer's own, else the pretrained model's."""
    network = cfg["model"]["TranslationNetwork"]
    return network["TextTokenizer"]["pretrained_model_name_or_path"] or network["pretrained_model_name_or_path"]


class GlossTextDataset(torch.utils.data.Dataset):
    """Samples: dict(index, name, text (the reference), gloss_ids, labels (target ids))."""

    def __init__(self, cfg: dict[str, Any], split: str, vocab: TranslationVocab | None = None) -> None:
        path = cfg["data"][split]
        self.samples = load_annotations(path)
        if vocab is None:
            vocab = build_translation_vocab(cfg, self.samples if split == "train" else load_annotations(cfg["data"]["train"]))
        self.vocab = vocab
        # what training.length_bucketing sorts by
        self.num_frames = [len(s.target_gloss.split()) if s.gloss is not None else 0 for s in self.samples]
        log.info("%s: %d samples, gloss OOV %.2f%%", split, len(self.samples), oov_rate(self.samples, vocab.glosses))
        if vocab.text.pruned:
            log.info("%s: %d of %d text subwords are not in the pruned vocabulary (encoded as <unk>)", split,
                     *vocab.text.not_kept(s.text for s in self.samples if s.text is not None))

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Nothing varies by epoch (the loop calls this on every dataset)."""

    def name(self, index: int) -> str:
        return self.samples[index].name

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        for key in ("gloss", "text"):
            if getattr(sample, key) is None:
                raise DataError(f"sample {sample.name}: the annotation has no {key} (Gloss2Text needs both)")
        gloss_ids = [*self.vocab.glosses.encode(sample.target_gloss), self.vocab.gloss_eos]
        return {"index": index, "name": sample.name, "text": sample.text,
                "gloss_ids": torch.tensor(gloss_ids), "labels": torch.tensor(self.vocab.text.encode_target(sample.text))}

    @staticmethod
    def collate(samples: list[dict[str, Any] | str]) -> dict[str, Any]:
        """Right-padded glosses (pad 0, with a mask) and targets (-100, which the loss ignores)."""
        good, batch = start_batch(samples)
        if not good:
            return batch
        pad = torch.nn.utils.rnn.pad_sequence
        gloss_ids = pad([s["gloss_ids"] for s in good], batch_first=True, padding_value=0)
        batch.update(
            gloss_ids=gloss_ids,
            gloss_mask=pad([torch.ones_like(s["gloss_ids"]) for s in good], batch_first=True, padding_value=0),
            labels=pad([s["labels"] for s in good], batch_first=True, padding_value=-100),
        )
        return batch
