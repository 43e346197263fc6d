"""SignTranslationNetwork of SingleStream-SLT (Sign2Text): RecognitionNetwork -> VL-mapper -> mBART.

The recognition branch runs on videos end to end (`data.input_type: video`), on cached frontend features
(`feature`: the frontend is frozen and only the VisualHead trains) or on cached VisualHead outputs
(`head_feature`: the whole branch is frozen, the loss is the translation loss alone). The frozen parts stay in
the model, so its checkpoint alone still reads videos (`prediction.py --video`). The VL-mapper turns the
branch's output into mBART encoder inputs:

    projection  the gloss features (B x T x hidden) through an MLP hidden -> VLMapper.hidden_size -> d_model
    embedding   the gloss probabilities (B x T x glosses) times a gloss-embedding table (glosses x d_model),
                initialised from the TranslationNetwork's gloss embeddings (a Gloss2Text checkpoint's, or
                subword means of a pretrained mBART)

The loss is the translation loss plus `recognition_weight` x the CTC loss of the recognition branch (unless frozen).
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
                 generation: dict[str, Any], input_type: str) -> None:
        super().__init__()
        num_glosses = len(vocab.glosses)
        self.recognition = RecognitionNetwork(recognition_cfg, num_glosses)
        self.head_input = input_type == "head_feature"
        frozen = {"video": None, "feature": self.recognition.frontend, "head_feature": self.recognition}[input_type]
        if frozen is not None:
            frozen.requires_grad_(False)
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
        if self.head_input and "features" in batch:
            recognition = self.recognition.cached_head_outputs(batch["features"], batch["feature_lengths"],
                                                               batch["labels"], batch["label_lengths"])
        else:
            recognition = self.recognition(batch)
        embeddings = self.mapper(recognition[self.mapper_input])
        mask = time_mask(recognition["output_lengths"], embeddings.shape[1]).long()
        outputs = {**recognition, "encoder_embeddings": embeddings, "encoder_mask": mask}
        if "text_labels" not in batch:  # a user's video (prediction.py --video): nothing to score
            return outputs
        translation = self.translation.forward_embeddings(embeddings, mask, batch["text_labels"])
        loss = translation["loss"]
        if not self.head_input:  # a frozen recognition branch has nothing to learn from its CTC loss
            loss = loss + self.recognition_weight * recognition["loss"]
        return {
            **outputs,
            "loss": loss,
            "translation_loss": translation["loss"],
            "recognition_loss": recognition["loss"],
        }

    @torch.no_grad()
    def decode(self, outputs: dict[str, Any], batch: dict[str, Any]) -> dict[str, list[list[int]]]:
        """Per sample: generated text token ids (`text`) and the recognition branch's gloss ids (`gloss`)."""
        return {"text": self.translation.generate(outputs["encoder_embeddings"], outputs["encoder_mask"]),
                "gloss": self.recognition.decode(outputs, batch)}
