"""Vocabulary pruning of a pretrained mBART (the tiny one of test_translation): logits of kept tokens unchanged,
the folder loads with from_pretrained and trains through a G2T config, dev text never read, bad input named."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from transformers import MBartForConditionalGeneration

from conftest import run
from dataset.annotations import load_annotations, normalize_gloss
from dataset.text_tokenizer import PRUNED_IDS_FILE, load_pretrained
from modelling.vocab_pruning import main, prune
from test_translation import DEMO_G2T, g2t_opts, predict_in_process, tiny_mbart, write_jsonl  # noqa: F401 (fixture)
from utils.errors import ConfigError, DataError


def words(path: Path) -> set[str]:
    return {w for s in load_annotations(path) for w in s.text.split() + normalize_gloss(s.gloss).split()}


@pytest.fixture(scope="module")
def splits(sign_corpus, tmp_path_factory) -> dict[str, Path]:
    """The demo train samples cut in two: 4 for training, 2 renamed dev/ (their words are tokens of the tiny
    tokenizer, unlike the demo's own dev words)."""
    folder = tmp_path_factory.mktemp("splits")
    rows = [{"name": s.name, "gloss": s.gloss, "text": s.text} for s in load_annotations(sign_corpus / "sign.train")]
    for row in rows[4:]:
        row["name"] = row["name"].replace("train/", "dev/")
    return {"train": write_jsonl(folder / "train.jsonl", rows[:4]), "dev": write_jsonl(folder / "dev.jsonl", rows[4:])}


@pytest.fixture(scope="module")
def biased_mbart(tiny_mbart, tmp_path_factory) -> Path:
    """The tiny mBART with a random final_logits_bias (a new one's is zero) and generation starting from de_DE,
    whose id pruning changes (the ids of <s> <pad> </s> <unk> stay 0..3)."""
    folder = shutil.copytree(tiny_mbart, tmp_path_factory.mktemp("biased") / "mbart")
    model = MBartForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    model.final_logits_bias.normal_(generator=torch.Generator().manual_seed(0))
    lang_id = load_pretrained(folder, "de_DE").lang_id
    model.config.decoder_start_token_id = model.generation_config.decoder_start_token_id = lang_id
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pruned(biased_mbart, splits, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("pruned") / "mbart"
    result = run([sys.executable, "-m", "modelling.vocab_pruning", "--model", str(biased_mbart),
                  "--train", str(splits["train"]), "--output", str(output)])
    assert "vocabulary pruned from" in result.stdout
    return output


def kept_ids(folder: Path) -> list[int]:
    return json.loads((folder / PRUNED_IDS_FILE).read_text())["kept_ids"]


def test_the_pruned_model_gives_the_logits_of_the_kept_tokens(biased_mbart, pruned):
    kept = kept_ids(pruned)
    full = MBartForConditionalGeneration.from_pretrained(biased_mbart, local_files_only=True).eval()
    small = MBartForConditionalGeneration.from_pretrained(pruned, local_files_only=True).eval()
    assert small.config.vocab_size == len(kept) < full.config.vocab_size
    for key in ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id"):
        assert kept[getattr(small.config, key)] == getattr(full.config, key)
        assert kept[getattr(small.generation_config, key)] == getattr(full.generation_config, key)
    assert small.generation_config.decoder_start_token_id < full.generation_config.decoder_start_token_id
    generator = torch.Generator().manual_seed(0)
    encoder_ids, decoder_ids = (torch.randint(len(kept), (2, n), generator=generator) for n in (7, 5))
    rows = torch.tensor(kept)
    with torch.no_grad():
        expected = full(input_ids=rows[encoder_ids], decoder_input_ids=rows[decoder_ids]).logits[..., rows]
        logits = small(input_ids=encoder_ids, decoder_input_ids=decoder_ids).logits
    assert torch.allclose(logits, expected, rtol=0, atol=1e-6)  # equal bit for bit here


def test_a_g2t_config_trains_on_the_pruned_folder_and_generates(pruned, splits, sign_corpus, tmp_path):
    model_dir = tmp_path / "run"
    opts = g2t_opts(sign_corpus, model_dir, **{
        "data.train": splits["train"], "data.dev": splits["dev"],
        "model.TranslationNetwork.pretrained_model_name_or_path": pruned, "model.TranslationNetwork.overwrite_cfg": "{}",
        "testing.cfg.translation.num_beams": 1})
    result = run([sys.executable, "training.py", "--config", str(DEMO_G2T), "--opts", *opts])
    assert "train: 0 of " in result.stdout  # the log line of each split
    assert re.search(r"dev: [1-9]\d* of \d+ text subwords are not in the pruned vocabulary", result.stdout)
    assert "validation at step 2: bleu1" in result.stdout
    predict_in_process(DEMO_G2T, opts, model_dir, "dev")
    rows = [json.loads(r) for r in (model_dir / "prediction" / "dev" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["hypothesis"], str) for r in rows)


def test_words_only_in_dev_text_are_not_kept_and_only_train_files_are_read(pruned, splits, tiny_mbart, capsys):
    text = load_pretrained(pruned, "de_DE")
    backend, kept = text.backend, set(kept_ids(pruned))
    dev_only = words(splits["dev"]) - words(splits["train"])
    assert {"westen", "zehn", "bergen"} <= dev_only
    dev_ids = backend.convert_tokens_to_ids(["▁" + w for w in dev_only])
    assert backend.unk_token_id not in dev_ids and not kept & set(dev_ids)
    assert text.decode(text.subword_ids("im westen")) == "im"  # 'westen' became <unk>, which decoding skips
    train_text = load_annotations(splits["train"])[0].text
    ids = text.encode_target(train_text)
    assert max(ids) < len(text) == len(kept) and text.decode(ids) == train_text
    assert text.not_kept([train_text]) == (0, len(ids) - 2)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "TRAINING split only" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"sample 'dev/demo_00005' is not from the training split"):
        prune(tiny_mbart, [splits["train"], splits["dev"]], pruned.parent / "leaky")


def test_bad_input_is_refused_naming_the_file(tiny_mbart, pruned, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"name": "train/a", "gloss": "REGEN", "text": "es regnet ."},
                                                   {"name": "train/b", "gloss": "SONNE"}])
    output = tmp_path / "out"
    with pytest.raises(ConfigError, match=rf"^--model {tmp_path}/none: no such folder"):
        prune(tmp_path / "none", [train], output)
    with pytest.raises(DataError, match=rf"^annotation file {train}: sample 'train/b' has no text"):
        prune(tiny_mbart, [train], output)
    with pytest.raises(ConfigError, match=r"is already pruned"):
        prune(pruned, [train], output)
    assert not output.exists() and not list(tmp_path.glob(".out.*"))
    broken = shutil.copytree(pruned, tmp_path / "broken")
    (broken / PRUNED_IDS_FILE).write_text('{"kept_ids": [0, 1]}')  # no </s>, no <unk>
    with pytest.raises(ConfigError, match=rf"pruning map {broken}/{PRUNED_IDS_FILE}: 'kept_ids' must be distinct"):
        load_pretrained(broken, "de_DE")
