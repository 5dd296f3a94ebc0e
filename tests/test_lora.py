import json

import pytest
import torch
import torch.nn as nn

from lmforge.adapt.lora import LoRAConfig, LoRALinear, apply_lora, merge_lora, resolve_targets
from lmforge.adapt.runs import merge_adapter
from lmforge.api import load, load_model
from lmforge.config import get_preset
from lmforge.errors import ConfigError, ModelDirError
from lmforge.model import build_model
from lmforge.model.blocks import Block
from lmforge.modeldir import ADAPTER_CONFIG, ADAPTER_FILE, read_weights
from lmforge.train.finetune import FinetuneConfig, finetune

from .conftest import tiny_train_config


def _randomize_adapters(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_lora_starts_as_the_identity_and_merged_equals_unmerged(preset):
    torch.manual_seed(0)
    model = build_model(get_preset(preset, vocab_size=64)).eval()
    x = torch.randint(0, 64, (2, 12))
    before = model(x)
    adapted = apply_lora(model, LoRAConfig(lora_rank=4, lora_targets=["q,k,v", "o", "mlp"]))
    assert len(adapted) == 4 * model.config.n_layer          # qkv, out, fc, proj per block
    assert torch.equal(model(x), before)                      # B = 0 at init
    _randomize_adapters(model)
    unmerged = model(x)
    assert (unmerged - before).abs().max() > 1e-2
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=1e-5)


def test_q_and_v_adapters_update_only_their_rows_of_the_fused_projection():
    model = build_model(get_preset("llama-tiny", vocab_size=64))      # GQA: q 64 rows, k 32, v 32
    apply_lora(model, LoRAConfig(lora_rank=2, lora_targets=["q", "v"]))
    qkv = model.transformer.blocks[0].attn.qkv
    assert qkv.slices == {"q": (0, 64), "v": (96, 128)}
    _randomize_adapters(model)
    delta = qkv.delta_weight()                                         # (128, 64)
    assert delta[64:96].abs().max() == 0                               # k rows untouched
    assert delta[:64].abs().min(dim=1).values.gt(0).all() and delta[96:].abs().max() > 0


def test_cross_attention_targets_map_onto_q_and_the_fused_kv():
    config = get_preset("gpt-tiny", vocab_size=64)
    block = nn.Module()
    block.layer = Block(config, cross=True)
    targets = resolve_targets(block, ["q", "k", "v", "o"])
    assert targets["layer.cross_attn.q"] == {"q": (0, 64)}
    assert targets["layer.cross_attn.kv"] == {"k": (0, 64), "v": (64, 128)}
    assert targets["layer.attn.qkv"] == {"q": (0, 64), "k": (64, 128), "v": (128, 192)}
    assert "layer.cross_attn.out" in targets and "layer.attn.out" in targets


def test_only_adapter_parameters_receive_gradients():
    torch.manual_seed(0)
    model = build_model(get_preset("gpt-tiny", vocab_size=64))
    apply_lora(model, LoRAConfig(lora_rank=4))
    _randomize_adapters(model)
    x = torch.randint(0, 64, (2, 12))
    model(x).logsumexp(-1).mean().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) < 0.2 * sum(
        p.numel() for p in model.parameters())


def test_muon_leaves_lora_adapters_to_adamw():
    from lmforge.train.muon import make_muon
    model = build_model(get_preset("gpt-tiny", vocab_size=64))
    apply_lora(model, LoRAConfig(lora_rank=4))
    opt = make_muon(model, lr=1e-3, muon_lr=0.02, weight_decay=0.0, betas=(0.9, 0.95))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = [names[id(p)] for g in opt.param_groups if g["muon"] for p in g["params"]]
    adamw = [names[id(p)] for g in opt.param_groups if not g["muon"] for p in g["params"]]
    assert muon == [] and adamw and all(".lora_" in n for n in adamw)


def test_bad_targets_are_named_with_the_module_list():
    model = build_model(get_preset("gpt-tiny", vocab_size=64))
    with pytest.raises(ConfigError, match=r"'gate' matches no Linear module.*transformer\.blocks\.N\.attn\.qkv"):
        apply_lora(model, LoRAConfig(lora_rank=4, lora_targets=["q", "gate"]))
    with pytest.raises(ConfigError, match="tied embeddings"):
        apply_lora(model, LoRAConfig(lora_rank=4, lora_targets=["lm_head"]))
    with pytest.raises(ConfigError, match="lora_rank"):
        LoRAConfig(lora_rank=-1)


def test_lora_finetune_saves_only_adapters_resumes_exactly_and_merges(tmp_path, char_data, tiny_model_dir):
    lora = LoRAConfig(lora_rank=4, lora_alpha=8, lora_targets=["q,v,o,mlp"])
    kw = dict(init_from=str(tiny_model_dir), max_steps=6, eval_interval=3, warmup_steps=1)
    args = FinetuneConfig(str(tiny_model_dir), merge_to=str(tmp_path / "merged"))
    summary = finetune(args, tiny_train_config(char_data, tmp_path / "lora", **kw), lora=lora)
    out = tmp_path / "lora"
    assert (out / ADAPTER_FILE).is_file() and not (out / "model.safetensors").exists()
    adapters, meta = read_weights(out / ADAPTER_FILE)
    assert meta["step"] == "6" and adapters and all(".lora_A." in k or ".lora_B." in k for k in adapters)
    assert any(t.abs().max() > 0 for k, t in adapters.items() if ".lora_B." in k)     # they trained
    info = json.loads((out / ADAPTER_CONFIG).read_text())
    assert info["lora"]["lora_rank"] == 4 and (out / info["base_model"]).resolve() == tiny_model_dir.resolve()

    # exact resume: 3 steps, stop, resume to 6 == 6 straight
    finetune(FinetuneConfig(str(tiny_model_dir)), tiny_train_config(char_data, tmp_path / "stop", stop_after=3, **kw),
             lora=lora)
    finetune(FinetuneConfig(str(tiny_model_dir)), tiny_train_config(char_data, tmp_path / "stop", resume=True, **kw))
    resumed, _ = read_weights(tmp_path / "stop" / ADAPTER_FILE)
    assert resumed.keys() == adapters.keys() and all(torch.equal(resumed[k], adapters[k]) for k in adapters)

    # the adapter directory loads as base + merged adapters; --merge-to wrote the same model
    x = torch.randint(0, 60, (1, 16))
    adapted, merged, base = load(out, device="cpu"), load(summary["merged"], device="cpu"), load(tiny_model_dir,
                                                                                                   device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(adapted.module(x), merged.module(x))
        assert (adapted.module(x) - base.module(x)).abs().max() > 1e-4        # the base itself is unchanged
    assert summary["merged"] and (tmp_path / "merged" / "model.safetensors").is_file()


def test_an_adapter_refuses_a_different_base(tmp_path, char_data, tiny_model_dir):
    from lmforge.train import train
    out = tmp_path / "lora"
    finetune(FinetuneConfig(str(tiny_model_dir)), tiny_train_config(char_data, out, init_from=str(tiny_model_dir),
                                                                  max_steps=1), lora=LoRAConfig(lora_rank=2))
    other_arch = tmp_path / "other"
    train(tiny_train_config(char_data, other_arch, n_layer=1, max_steps=1))
    with pytest.raises(ModelDirError, match="different base.*config hash"):
        merge_adapter(out, tmp_path / "m1", base=other_arch)
    same_arch = tmp_path / "same"
    train(tiny_train_config(char_data, same_arch, max_steps=1, seed=7))
    with pytest.raises(ModelDirError, match="different weights"):
        merge_adapter(out, tmp_path / "m2", base=same_arch)
    info = json.loads((out / ADAPTER_CONFIG).read_text())
    info["base_model"] = "../nowhere"
    (out / ADAPTER_CONFIG).write_text(json.dumps(info))
    with pytest.raises(ModelDirError, match="does not exist.*--base"):
        load_model(out)
    assert merge_adapter(out, tmp_path / "m3", base=tiny_model_dir).is_dir()       # --base fixes a moved base


def test_lora_cli_flags_and_merge_verb(tmp_path, char_data, tiny_model_dir, capsys):
    from lmforge.cli import main
    out, merged = tmp_path / "lora", tmp_path / "merged"
    assert main(["finetune", str(tiny_model_dir), "--data", str(char_data), "--out", str(out), "--lora-rank", "2",
                 "--lora-targets", "q,k", "--max-steps", "1", "--batch-size", "2", "--eval-iters", "1",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "LoRA rank 2: training" in capsys.readouterr().out
    assert main(["merge-lora", str(out), str(merged)]) == 0
    assert (merged / "model.safetensors").is_file()
    assert main(["finetune", str(tiny_model_dir), "--data", str(char_data), "--out", str(tmp_path / "x"),
                 "--lora-rank", "2", "--lora-targets", "nothing", "--no-progress", "--device", "cpu"]) == 2
    assert "matches no Linear module" in capsys.readouterr().err
