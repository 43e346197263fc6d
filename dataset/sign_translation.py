"""Sign2Text samples: a sign video or its cached features, the gloss targets of the recognition
branch (CTC) and the spoken-language text target of the translation branch.

The gloss vocabulary is the Sign2Gloss checkpoint's (`model.RecognitionNetwork.load_ckpt`), so the loaded
recognition head's classes keep their meaning; without one it is built as for Sign2Gloss.
"""
from __future__ import annotations

from typing import Any

import torch

from dataset import sign_dataset_cfg
from dataset.annotations import SignSample, gloss_vocabulary, load_annotations
from dataset.feature_cache import FeatureCache, expected_meta, s2g_checkpoint
from dataset.loader import ctc_targets, pad_videos, start_batch
from dataset.sign import SignDataset
from dataset.translation import TranslationVocab, build_translation_vocab
from dataset.vocab import Vocabulary
from utils.errors import ConfigError, DataError


def recognition_glosses(cfg: dict[str, Any], train: list[SignSample] | None = None) -> Vocabulary:
    """The Sign2Gloss checkpoint's glosses, else those of `GlossTokenizer.gloss2id_file` or the train split."""
    network = cfg["model"]["RecognitionNetwork"]
    if network["load_ckpt"]:
        return Vocabulary.from_state(s2g_checkpoint(network["load_ckpt"])[0])
    return gloss_vocabulary(train or load_annotations(cfg["data"]["train"]), network["GlossTokenizer"]["gloss2id_file"])


def sign_text_vocab(cfg: dict[str, Any]) -> TranslationVocab:
    train = load_annotations(cfg["data"]["train"])
    return build_translation_vocab(cfg, train, recognition_glosses(cfg, train))


class SignTextDataset(torch.utils.data.Dataset):
    """Samples: dict(index, name, text (the reference translation), gloss_text, labels (gloss ids),
    text_labels (target token ids), and video (3 x T x H x W uint8) or cached features (T x C float32))."""

    def __init__(self, cfg: dict[str, Any], split: str, train: bool = False, vocab: TranslationVocab | None = None) -> None:
        data = cfg["data"]
        self.vocab = vocab or sign_text_vocab(cfg)
        self.signs = SignDataset(sign_dataset_cfg(cfg), split, train, cfg["training"]["random_seed"], self.vocab.glosses)
        self.cache = None
        self.num_frames = self.signs.num_frames  # what training.length_bucketing sorts by
        if data["input_type"] != "video":
            if not data["feature_cache"] or not cfg["model"]["RecognitionNetwork"]["load_ckpt"]:
                raise ConfigError(f"data.input_type {data['input_type']} needs data.feature_cache and the Sign2Gloss "
                                  "checkpoint that made it (model.RecognitionNetwork.load_ckpt)")
            self.cache = FeatureCache(data["feature_cache"], split, expected_meta(cfg))
            self.num_frames = [self.cache.frames(name) or 0 for name in map(self.name, range(len(self)))]

    def __len__(self) -> int:
        return len(self.signs)

    def set_epoch(self, epoch: int) -> None:
        self.signs.set_epoch(epoch)

    def name(self, index: int) -> str:
        return self.signs.name(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, text = self.name(index), self.signs.samples[index].text
        if text is None:
            raise DataError(f"sample {name}: the annotation has no text (Sign2Text needs it)")
        gloss_text, labels = self.signs.target(index)
        item = {"index": index, "name": name, "text": text, "gloss_text": gloss_text, "labels": labels,
                "text_labels": torch.tensor(self.vocab.text.encode_target(text))}
        if self.cache is not None:
            item["features"] = self.cache.read(name)
        else:
            item["video"] = self.signs.frames(index)
        return item

    @staticmethod
    def collate(samples: list[dict[str, Any] | str]) -> dict[str, Any]:
        """Videos or features padded in time, CTC gloss targets concatenated, text targets padded with -100."""
        good, batch = start_batch(samples)
        if not good:
            return batch
        pad = torch.nn.utils.rnn.pad_sequence
        if "features" in good[0]:
            batch.update(features=pad([s["features"] for s in good], batch_first=True),
                         feature_lengths=torch.tensor([len(s["features"]) for s in good]))
        else:
            batch.update(pad_videos(good))
        batch.update(
            ctc_targets(good),
            gloss_text=[s["gloss_text"] for s in good],
            text_labels=pad([s["text_labels"] for s in good], batch_first=True, padding_value=-100),
        )
        return batch
