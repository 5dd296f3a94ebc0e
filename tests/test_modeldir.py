import shutil

import pytest
import torch

import lmforge
from lmforge.api import load_model
from lmforge.errors import ConfigError, ModelDirError
from lmforge.modeldir import atomic_write_text


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_load_round_trip_gives_identical_logits(tiny_model_dir, tmp_path):
    lm = lmforge.load(tiny_model_dir, device="cpu")
    saved = lm.save(tmp_path / "copy")
    again = lmforge.load(saved, device="cpu")
    x = torch.randint(0, lm.config.vocab_size, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(lm.module(x), again.module(x), rtol=0, atol=0)
    assert again.module.lm_head.weight is again.module.transformer.tok_emb.weight      # still tied
    assert "params=" in repr(again)


def test_missing_directory_and_files(tiny_model_dir, tmp_path):
    with pytest.raises(ModelDirError, match="does not exist.*lmforge train"):
        load_model(tmp_path / "nowhere")
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match=r"missing model.safetensors \(found: .*config.json"):
        load_model(d)
    d2 = _copy(tiny_model_dir, tmp_path / "m2")
    (d2 / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError, match="no tokenizer"):
        load_model(d2)
    with pytest.raises(ModelDirError, match="is a file"):
        load_model(d2 / "config.json")


def test_corrupted_weights_file(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])          # truncated
    with pytest.raises(ModelDirError, match="not a valid safetensors file.*truncated or corrupted"):
        load_model(d)


def test_config_that_does_not_match_the_weights(tiny_model_dir, tmp_path):
    d = _copy(tiny_model_dir, tmp_path / "m")
    cfg = lmforge.ModelConfig.load(d / "config.json")
    cfg.d_model = 128
    cfg.save(d / "config.json")
    with pytest.raises(ModelDirError, match=r"tensor 'transformer\.[\w.]+' has shape \(64.*\) but the model "
                                            r"expects \(128.*\)"):
        load_model(d)
    cfg.d_model, cfg.n_layer = 64, 3
    cfg.save(d / "config.json")
    with pytest.raises(ModelDirError, match=r"missing \['transformer.blocks.2"):
        load_model(d)
    (d / "config.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model(d)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    from lmforge import modeldir

    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        modeldir.atomic_write(target, boom)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    assert target.stat().st_mode & 0o777 == modeldir.FILE_MODE          # like open(), not mkstemp's 0600
