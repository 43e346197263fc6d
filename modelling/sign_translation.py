"""SignTranslationNetwork of SingleStream-SLT (Sign2Text): RecognitionNetwork -> VL-mapper -> mBART.

The recognition branch runs on videos end to end, or on cached frontend features (then it holds its
VisualHead only). The VL-mapper turns its output into mBART encoder inputs:

    projection  the gloss features (B x T x hidden) through an MLP hidden -> VLMapper.hidden_size -> d_model
    embedding   the gloss probabilities (B x T x glosses) times a gloss-embedding table (glosses x d_model),
                initialised from the TranslationNetwork's gloss embeddings (a Gloss2Text checkpoint's, or
                subword means of a pretrained mBART)

The loss is the translation loss plus `recognition_weight` x the CTC loss of the recognition branch.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dataset.translation import TranslationVocab
from modelling.recognition import RecognitionNetwork
from modelling.translation import TranslationNetwork
from modelling.visual_head import time_mask


class GlossProbabilityEmbedding(nn.Module):
    """Expected gloss embedding under the frame's gloss distribution (the blank's row starts at zero)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.detach().clone())

    def forward(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities @ self.table


class SignTranslationNetwork(nn.Module):
    def __init__(self, cfg: dict[str, Any], recognition_cfg: dict[str, Any], vocab: TranslationVocab,
                 generation: dict[str, Any], feature_input: bool) -> None:
        super().__init__()
        num_glosses = len(vocab.glosses)
        self.recognition = RecognitionNetwork(recognition_cfg, num_glosses, with_frontend=not feature_input)
        self.translation = TranslationNetwork(cfg["TranslationNetwork"], vocab, generation)
        mapper = cfg["VLMapper"]
        self.mapper_input = "gloss_features" if mapper["type"] == "projection" else "gloss_probabilities"
        if mapper["type"] == "projection":
            hidden = recognition_cfg["visual_head"]["hidden_size"]
            d_model = self.translation.mbart.config.d_model
            self.mapper = nn.Sequential(nn.Linear(hidden, mapper["hidden_size"]), nn.ReLU(),
                                        nn.Linear(mapper["hidden_size"], d_model))
        else:
            self.mapper = GlossProbabilityEmbedding(self.translation.gloss_embedding.weight[:num_glosses])
        # The encoder's input comes from the mapper: an unused gloss embedding would only stall DDP.
        del self.translation.gloss_embedding
        self.recognition_weight = cfg["recognition_weight"]

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        recognition = self.recognition(batch)
        embeddings = self.mapper(recognition[self.mapper_input])
        mask = time_mask(recognition["output_lengths"], embeddings.shape[1]).long()
        translation = self.translation.forward_embeddings(embeddings, mask, batch["text_labels"])
        return {
            **recognition,
            "loss": translation["loss"] + self.recognition_weight * recognition["loss"],
            "translation_loss": translation["loss"],
            "recognition_loss": recognition["loss"],
            "encoder_embeddings": embeddings,
            "encoder_mask": mask,
        }

    @torch.no_grad()
    def decode(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, list[list[int]]]:
        """Per sample: generated text token ids (`text`) and the recognition branch's gloss ids (`gloss`)."""
        return {"text": self.translation.generate(outputs["encoder_embeddings"], outputs["encoder_mask"]),
                "gloss": self.recognition.decode(outputs, batch)}
