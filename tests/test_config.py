import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from utils.config import load_config
from utils.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def grid_files(tmp_path):
    for name in ("train.txt", "dev.txt"):
        (tmp_path / name).write_text("s1/abc\n")
    return tmp_path


def write_config(tmp_path, grid_files, **sections):
    cfg = {
        "task": "lip_sentence",
        "data": {"root": str(grid_files), "train": str(grid_files / "train.txt"), "dev": str(grid_files / "dev.txt")},
        "training": {"model_dir": str(tmp_path / "out"), "total_epoch": 1,
                     "optimization": {"learning_rate": {"default": 1e-3}}},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_defaults_are_filled_and_overrides_are_read_as_yaml(tmp_path, grid_files):
    path = write_config(tmp_path, grid_files)
    cfg = load_config(path, ["training.batch_size=3", "training.shuffle=false", "model.LipNet.channels=[8, 16, 24]",
                             "training.optimization.learning_rate.default=2e-4"])
    assert cfg["training"]["batch_size"] == 3 and cfg["training"]["shuffle"] is False
    assert cfg["model"]["LipNet"]["channels"] == [8, 16, 24]
    assert cfg["training"]["optimization"]["learning_rate"]["default"] == 2e-4
    assert cfg["data"]["input"]["height"] == 64  # default
    assert cfg["training"]["validation"]["metric"] == "cer"  # the task's default metric
    assert cfg["testing"]["cfg"]["recognition"]["beam_size"] == 1  # SLRT's key; 1 decodes greedily


@pytest.mark.parametrize(
    "opts,message",
    [
        (["training.batch_sise=4"], "unknown key 'training.batch_sise' (did you mean 'training.batch_size'?)"),
        (["training.learning_rate=0.1"], "did you mean 'training.optimization.learning_rate'?"),
        (["training.batch_size=four"], "key 'training.batch_size' must be int, got 'four'"),
        (["training.shuffle=1"], "key 'training.shuffle' must be bool, got 1"),
        (["training.batch_size=true"], "key 'training.batch_size' must be int, got True"),
        (["training.amp=bf17"], "expected one of ['none', 'bf16', 'fp16'] (did you mean 'bf16'?)"),
        (["data.dev=/no/such/split.txt"], "key 'data.dev' names /no/such/split.txt, which does not exist"),
        (["model.LipNet.channels=[1, 2]"], "key 'model.LipNet.channels' must have 3 items"),
        (["training.optimization.betas=[0.9, x]"], "key 'training.optimization.betas[1]' must be float"),
        (["task=lip_sentense"], "did you mean 'lip_sentence'?"),
        (["training.model_dir"], "expected key.path=value"),
        (["training.model_dir=null"], "key 'training.model_dir' is required, got null"),
        (["task=[lip_sentence]"], "key 'task' is ['lip_sentence'], expected one of"),
        (["training.optimization.min_lr_ratio=2"], "key 'training.optimization.min_lr_ratio' is 2.0, expected at most 1"),
        (["training.ema.decay=1"], "key 'training.ema.decay' is 1.0, expected below 1"),
        (["training.optimization.gamma=0"], "key 'training.optimization.gamma' is 0.0, expected above 0"),
        (["training.optimization.learning_rate.default=-1e-3"], "learning_rate.default' is -0.001, expected at least 0"),
        (["training.clip_grad_norm=.nan"], "key 'training.clip_grad_norm' must be a finite number, got nan"),
        (["training.optimization.weight_decay=inf"], "must be a finite number, got inf"),
        (["testing.cfg.recognition.beam_size=0"], "key 'testing.cfg.recognition.beam_size' is 0, expected at least 1"),
        # the suggestion is never the section the misspelt key already sits in
        (["training.validation.validation=1"], "(did you mean 'training.validation.metric'?)"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(tmp_path, grid_files, opts, message):
    path = write_config(tmp_path, grid_files)
    with pytest.raises(ConfigError) as err:
        load_config(path, opts)
    assert message in str(err.value)
    assert str(path) in str(err.value) or "override" in str(err.value)


def test_yaml_tags_that_construct_objects_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("task: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("entry", ["training.py", "prediction.py", "extract_feature.py"])
def test_entry_points_print_one_line_and_exit_nonzero(tmp_path, grid_files, entry):
    path = write_config(tmp_path, grid_files)
    result = subprocess.run(
        [sys.executable, str(ROOT / entry), "--config", str(path), "--opts", "training.batch_sise=2"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "unknown key 'training.batch_sise' (did you mean 'training.batch_size'?)" in result.stderr
    assert not (tmp_path / "out").exists()  # refused before any work started


@pytest.mark.parametrize("path", sorted((ROOT / "experiments/configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_experiment_file_is_valid(path):
    cfg = load_config(path, check_paths=False)
    assert cfg["training"]["model_dir"].startswith("experiments/outputs/")
