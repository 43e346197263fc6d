"""Gloss2Text: metrics, config keys, text tokenizer, TranslationNetwork (a tiny mBART saved with save_pretrained
and loaded like a real checkpoint), and training.py / prediction.py on the demo corpus and on real Phoenix-2014T."""
from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from transformers import MBartConfig, MBartForConditionalGeneration, MBartTokenizer

from conftest import ROOT, entry_command, run
from dataset import build_dataset
from dataset.annotations import load_annotations, normalize_gloss
from dataset.text_tokenizer import train_tokenizer
from dataset.translation import TEXT_TOKENIZER_FILE
from modelling import build_model
from prediction import predict
from training import _improves
from utils.checkpoint import load_checkpoint
from utils.config import load_config
from utils.distributed import init_distributed
from utils.errors import CheckpointError, ConfigError, DataError
from utils.inference import load_trained
from utils.metrics import bleu, rouge_l, score
from utils.safe_pickle import load_pickle

DEMO_G2T = ROOT / "experiments/configs/demo/sign_g2t.yaml"
SCRATCH = ROOT / "experiments/configs/SingleStream/phoenix-2014t_g2t_scratch.yaml"
PHOENIX = Path(os.environ.get("PHOENIX2014T_DIR", "/work/shared/data/phoenix-2014t"))  # as test_annotations


def g2t_opts(corpus: Path, model_dir: Path, **extra) -> list[str]:
    """The demo G2T config made tiny: d_model 16, a few steps, greedy-or-beam generation of short texts."""
    opts = {
        "data.train": corpus / "sign.train", "data.dev": corpus / "sign.dev", "data.test": corpus / "sign.test",
        "model.TranslationNetwork.GlossTokenizer.gloss2id_file": corpus / "gloss2ids.pkl",
        "model.TranslationNetwork.overwrite_cfg.d_model": 16,
        "model.TranslationNetwork.overwrite_cfg.encoder_ffn_dim": 32,
        "model.TranslationNetwork.overwrite_cfg.decoder_ffn_dim": 32,
        "training.model_dir": model_dir, "training.batch_size": 2, "training.total_epoch": 1,
        "training.log_freq": 1, "training.validation.freq": 1, "testing.cfg.translation.max_length": 12,
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def predict_in_process(config: Path, opts: list[str], model_dir: Path, split: str) -> dict:
    """prediction.py's work on best.ckpt, without starting another Python (the entry point itself is run
    by the demo test)."""
    trained = load_trained(model_dir / "ckpts" / "best.ckpt", load_config(config, opts))
    return predict(trained, model_dir / "prediction", [split], init_distributed())[split]


# ----------------------------------------------------------------------------------------------- metrics

def test_bleu_and_rouge_l_equal_hand_computed_values():
    # hypothesis 3 of the reference's 6 words, all matching: precisions 1, brevity penalty exp(1 - 6/3)
    refs, hyps = ["the cat sat on the mat"], ["the cat sat"]
    scores = bleu(refs, hyps, "13a")
    for n in (1, 2, 3):
        assert scores[f"bleu{n}"] == pytest.approx(100 * torch.exp(torch.tensor(-1.0)).item())
    assert scores["bleu4"] == 0.0  # no 4-gram in the hypothesis
    # LCS 3: precision 1, recall 1/2, F1 2/3
    assert rouge_l(refs, hyps, "13a") == pytest.approx(100 * 2 / 3)
    assert bleu(["a b c d e"], ["a b c d e"], "none")["bleu4"] == pytest.approx(100.0)


def test_tokenisation_13a_splits_punctuation_and_none_keeps_whitespace_tokens():
    refs, hyps = ["es regnet ."], ["es regnet."]
    assert bleu(refs, hyps, "13a")["bleu3"] == pytest.approx(100.0)
    # none: 'regnet.' is one token, 2 of 3 reference words
    assert rouge_l(refs, hyps, "none") == pytest.approx(100 * 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert rouge_l(["für morgen"], ["für morgen"], "13a") == pytest.approx(100.0)  # umlauts stay inside words


def test_chinese_rouge_l_and_bleu_count_characters():
    from rouge_score.rouge_scorer import RougeScorer

    refs, hyps = ["今天天气很好"], ["今天很好"]
    assert RougeScorer(["rougeL"]).score(refs[0], hyps[0])["rougeL"].fmeasure == 0.0  # why we tokenize ourselves
    # LCS 4 characters: precision 4/4, recall 4/6, F1 0.8
    assert rouge_l(refs, hyps, "zh") == pytest.approx(80.0)
    # brevity penalty exp(1 - 6/4); bigram precision 2/3 (今天, 很好 of 今天 天很 很好)
    expected_bleu2 = 100 * torch.exp(torch.tensor(-0.5)).item() * (2 / 3) ** 0.5
    assert bleu(refs, hyps, "zh")["bleu2"] == pytest.approx(expected_bleu2)
    assert set(score("G2T", refs, hyps, metric_tokenize="zh")) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l"}


def test_the_best_checkpoint_is_the_one_with_the_higher_bleu_or_rouge():
    assert _improves("bleu4", 20.0, 10.0) and not _improves("bleu4", 5.0, 10.0)
    assert _improves("rouge_l", 30.0, 29.0) and not _improves("wer", 30.0, 29.0)


# ------------------------------------------------------------------------------------------------ config

def test_g2t_configs_validate_and_new_keys_are_checked(tmp_path):
    phoenix = [f"data.{s}={PHOENIX}/phoenix-2014t.{s}" for s in ("train", "dev", "test")]
    cfg = load_config(SCRATCH, phoenix)
    network = cfg["model"]["TranslationNetwork"]
    assert network["overwrite_cfg"]["d_model"] == 512 and network["overwrite_cfg"]["encoder_layers"] == 2
    assert network["label_smoothing"] == 0.1 and cfg["testing"]["cfg"]["translation"]["num_beams"] == 4
    assert cfg["testing"]["cfg"]["recognition"]["beam_size"] == 1  # the shared testing keys stay beside
    assert cfg["training"]["validation"]["metric"] == "bleu4"
    for name in ("phoenix-2014t_g2t.yaml", "csl-daily_g2t.yaml"):
        pretrained = load_config(ROOT / "experiments/configs/SingleStream" / name, check_paths=False)
        assert pretrained["model"]["TranslationNetwork"]["pretrained_model_name_or_path"]
    assert load_config(DEMO_G2T, check_paths=False)["task"] == "G2T"
    bad = {
        "testing.cfg.translation.metric_tokenize=intl": "key 'testing.cfg.translation.metric_tokenize' is 'intl', "
                                                        "expected one of ['13a', 'zh', 'none']",
        "model.TranslationNetwork.overwrite_cfg.d_modl=8": "(did you mean 'model.TranslationNetwork.overwrite_cfg.d_model'?)",
        "model.TranslationNetwork.label_smoothing=1.0": "key 'model.TranslationNetwork.label_smoothing' is 1.0, expected below 1",
        "testing.cfg.translation.num_beams=0": "key 'testing.cfg.translation.num_beams' is 0, expected at least 1",
        f"model.TranslationNetwork.pretrained_model_name_or_path={tmp_path}/none": f"names {tmp_path}/none, which does not exist",
        "training.validation.metric=wer": "key 'training.validation.metric' is 'wer', expected one of",
    }
    for opt, message in bad.items():
        with pytest.raises(ConfigError) as err:
            load_config(SCRATCH, phoenix + [opt])
        assert message in str(err.value) and "\n" not in str(err.value)


def test_model_sizes_with_a_pretrained_model_are_refused_in_one_line(tiny_mbart, sign_corpus, tmp_path):
    cfg = load_config(DEMO_G2T, g2t_opts(sign_corpus, tmp_path, **{
        "model.TranslationNetwork.pretrained_model_name_or_path": tiny_mbart}))
    with pytest.raises(ConfigError, match=r"overwrite_cfg.d_model: sizes come from the pretrained model"):
        build_model(cfg, build_dataset(cfg, "train", train=True).vocab)


# --------------------------------------------------------------------------------------- text tokenizer

def test_a_trained_text_tokenizer_is_deterministic_and_round_trips_texts():
    texts = [s.text for s in load_annotations(PHOENIX / "phoenix-2014t.train")[:300]]
    for model_type in ("word", "bpe"):
        first, second = (train_tokenizer(texts, model_type, 200, "de_DE") for _ in range(2))
        assert first.to_state() == second.to_state()
        ids = first.encode_target(texts[0])
        assert ids[-2:] == [first.eos_id, first.lang_id]
        assert first.decode(ids) == texts[0]  # ' .' kept apart, as in the references


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_g2t_samples_without_text_are_refused_naming_the_sample(sign_corpus, tmp_path):
    lines = [{"name": "train/a", "gloss": "REGEN", "text": "es regnet ."}, {"name": "train/b", "gloss": "SONNE"}]
    path = write_jsonl(tmp_path / "train.jsonl", lines)
    cfg = load_config(DEMO_G2T, g2t_opts(sign_corpus, tmp_path / "run", **{"data.train": path}))
    dataset = build_dataset(cfg, "train", train=True)
    assert dataset[0]["text"] == "es regnet ."
    with pytest.raises(DataError, match=r"^sample train/b: the annotation has no text"):
        dataset[1]


def test_the_text_tokenizer_is_never_trained_on_dev_or_test_texts(sign_corpus, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [{"name": "train/a", "gloss": "REGEN", "text": "es regnet ."},
                                                  {"name": "test/b", "gloss": "SONNE", "text": "die sonne ."}])
    cfg = load_config(DEMO_G2T, g2t_opts(sign_corpus, tmp_path / "run", **{"data.train": path}))
    with pytest.raises(DataError, match=r"text tokenizer: sample 'test/b' of data.train .* is not from the training"):
        build_dataset(cfg, "train", train=True)


# ------------------------------------------------------------------------------ tiny pretrained mBART

@pytest.fixture(scope="module")
def tiny_mbart(sign_corpus, tmp_path_factory) -> Path:
    """An mBART and its tokenizer, random and tiny, written with save_pretrained as a real one is."""
    samples = load_annotations(sign_corpus / "sign.train")
    words = {w for s in samples for w in s.text.split() + normalize_gloss(s.gloss).split()}
    letters = sorted({c for w in words for c in w})
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [("▁" + w, -2.0) for w in sorted(words)] + [(c, -5.0) for c in letters]
    tokenizer = MBartTokenizer(vocab=pieces)
    config = MBartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                         max_position_embeddings=64, scale_embedding=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    folder = tmp_path_factory.mktemp("tiny-mbart")
    torch.manual_seed(0)
    MBartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_pretrained_mbart_gets_gloss_embeddings_from_its_subwords_and_scales_them(tiny_mbart, sign_corpus, tmp_path):
    cfg = load_config(DEMO_G2T, g2t_opts(sign_corpus, tmp_path, **{
        "model.TranslationNetwork.pretrained_model_name_or_path": tiny_mbart,
        "model.TranslationNetwork.overwrite_cfg": "{dropout: 0.0, attention_dropout: 0.0}",
        "model.TranslationNetwork.freeze_txt_embed": "true"}))
    train = build_dataset(cfg, "train", train=True)
    vocab = train.vocab
    model = build_model(cfg, vocab).eval()
    tokens = model.mbart.get_input_embeddings().weight
    assert not tokens.requires_grad and model.gloss_embedding.weight.requires_grad
    text = vocab.text
    for index, gloss in list(enumerate(vocab.glosses.tokens))[1:-1]:
        expected = tokens[text.subword_ids(gloss)].mean(0)
        assert torch.allclose(model.gloss_embedding.weight[index], expected), gloss
    # a gloss whose embedding is one token's: the encoder sees what the token ids would give it
    index = next(i for i, g in enumerate(vocab.glosses.tokens) if len(text.subword_ids(g)) == 1 and i > 0)
    gloss_batch = {"gloss_ids": torch.tensor([[index, vocab.gloss_eos]]), "gloss_mask": torch.ones(1, 2, dtype=torch.long)}
    token_ids = torch.tensor([[*text.subword_ids(vocab.glosses.tokens[index]), text.eos_id]])
    encoder = model.mbart.get_encoder()
    with torch.no_grad():
        from_glosses = encoder(inputs_embeds=model.gloss_embedding(gloss_batch["gloss_ids"]) * model.embed_scale,
                               attention_mask=gloss_batch["gloss_mask"]).last_hidden_state
        from_tokens = encoder(input_ids=token_ids).last_hidden_state
    assert torch.allclose(from_glosses, from_tokens, atol=1e-6)
    # targets end with </s> de_DE; the decoder input starts with de_DE, and so does generation
    batch = train.collate([train[0], train[1]])
    assert batch["labels"][0, :len(train[0]["labels"])].tolist()[-2:] == [text.eos_id, text.lang_id]
    outputs = model.train()(batch)
    outputs["loss"].backward()
    assert torch.isfinite(outputs["loss"]) and model.gloss_embedding.weight.grad is not None
    generated = model.eval().decode(outputs, batch)
    assert all(ids[0] == text.lang_id for ids in generated)


def test_gloss_embeddings_load_from_a_saved_gloss_to_vector_dict(sign_corpus, tmp_path):
    vector = torch.arange(16, dtype=torch.float32)
    table = tmp_path / "gloss_embeddings.bin"
    torch.save({"MONTAG": vector, "<pad>": -vector, "NOT-A-DEMO-GLOSS": vector}, table)
    cfg = load_config(DEMO_G2T, g2t_opts(sign_corpus, tmp_path / "run", **{
        "model.TranslationNetwork.GlossEmbedding.gloss2embed_file": table,
        "model.TranslationNetwork.GlossEmbedding.freeze": "true"}))
    vocab = build_dataset(cfg, "train", train=True).vocab
    model = build_model(cfg, vocab)
    montag = model.gloss_embedding.weight[vocab.glosses.tokens.index("montag")]
    assert torch.equal(montag, vector) and not model.gloss_embedding.weight.requires_grad
    torch.save({"MONTAG": vector[:8]}, table)
    with pytest.raises(CheckpointError, match=r"gloss2embed_file .*: entry 'MONTAG' is not a gloss mapped to a vector of 16"):
        build_model(cfg, vocab)


def test_g2t_with_a_pretrained_mbart_trains_through_training_py_and_predicts(tiny_mbart, sign_corpus, tmp_path):
    model_dir = tmp_path / "pretrained"
    opts = g2t_opts(sign_corpus, model_dir, **{"model.TranslationNetwork.pretrained_model_name_or_path": tiny_mbart,
                                              "model.TranslationNetwork.overwrite_cfg": "{}",
                                              "testing.cfg.translation.num_beams": 1})
    result = run(entry_command("training.py", opts, config=DEMO_G2T))
    assert "validation at step 3: bleu1" in result.stdout and not (model_dir / TEXT_TOKENIZER_FILE).exists()
    assert load_checkpoint(model_dir / "ckpts" / "last.ckpt")["vocab"]["text"]["pretrained"] == str(tiny_mbart)
    summary = predict_in_process(DEMO_G2T, opts, model_dir, "test")
    assert summary["num_samples"] == 1 and {"bleu4", "rouge_l"} <= summary.keys()


# ------------------------------------------------------------------------------------ from scratch

def test_g2t_from_scratch_on_the_demo_corpus_trains_and_predicts_from_the_checkpoint_alone(sign_corpus, tmp_path):
    model_dir = tmp_path / "scratch"
    opts = g2t_opts(sign_corpus, model_dir)
    result = run(entry_command("training.py", opts, config=DEMO_G2T))
    assert "validation at step 3: bleu1" in result.stdout and "rouge_l" in result.stdout
    payload = load_checkpoint(model_dir / "ckpts" / "last.ckpt")
    kept = model_dir / TEXT_TOKENIZER_FILE
    assert payload["vocab"]["text"]["tokenizer_json"] == kept.read_text()
    kept.unlink()  # prediction needs only the checkpoint
    predicted = run(entry_command("prediction.py", opts, config=DEMO_G2T))
    assert "metric_tokenize: 13a" in predicted.stdout
    summary = json.loads((model_dir / "prediction" / "test" / "summary.json").read_text())
    assert summary["metric_tokenize"] == "13a" and {f"bleu{n}" for n in range(1, 5)} <= summary.keys()
    row = json.loads((model_dir / "prediction" / "test" / "results.jsonl").read_text().splitlines()[0])
    assert row["name"].startswith("test/") and row["reference"].endswith(" .")


def test_g2t_from_scratch_on_a_slice_of_real_phoenix_2014t(tmp_path):
    """The real annotation pickles, cut to 40 / 8 / 8 entries and written back in SLRT's gzip format."""
    paths = {}
    for split, count in (("train", 40), ("dev", 8), ("test", 8)):
        entries = load_pickle(PHOENIX / f"phoenix-2014t.{split}", "annotation file")[:count]
        paths[split] = tmp_path / f"phoenix-2014t.{split}"
        with gzip.open(paths[split], "wb") as f:
            pickle.dump(entries, f)
    model_dir = tmp_path / "phoenix"
    opts = [f"data.{split}={path}" for split, path in paths.items()] + [
        f"training.model_dir={model_dir}", "training.total_epoch=1", "training.batch_size=8", "training.log_freq=1",
        "training.validation.freq=1", "model.TranslationNetwork.overwrite_cfg.d_model=32",
        "model.TranslationNetwork.overwrite_cfg.encoder_ffn_dim=32", "model.TranslationNetwork.overwrite_cfg.decoder_ffn_dim=32",
        "testing.cfg.translation.max_length=10", "testing.cfg.translation.num_beams=2"]
    result = run(entry_command("training.py", opts, config=SCRATCH))
    assert "train: 40 samples, gloss OOV 0.00%" in result.stdout and "validation at step 5: bleu1" in result.stdout
    assert predict_in_process(SCRATCH, opts, model_dir, "dev")["metric_tokenize"] == "none"
    rows = [json.loads(r) for r in (model_dir / "prediction" / "dev" / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == [s.name for s in load_annotations(paths["dev"])]
