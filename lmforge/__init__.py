"""lmforge: tokenize, pretrain, fine-tune, evaluate, compress, generate and serve transformer
language models — decoder (GPT, Llama), encoder (BERT), encoder-decoder — from one set of blocks.

    import lmforge
    lmforge.prepare(lmforge.PrepareConfig(inputs=["corpus.txt"], out="data/corpus"))
    lmforge.train(lmforge.TrainConfig(data="data/corpus", out="runs/my-model", max_steps=500))
    lm = lmforge.load("runs/my-model")
    print(lm.generate("Once upon a time", max_new_tokens=50))

    lmforge.finetune(lmforge.FinetuneConfig("runs/my-bert", task="classify"),
                     lmforge.TrainConfig(data="labels.csv", out="runs/topics"), lmforge.ClassifyConfig())
    print(lmforge.load("runs/topics").classify("some text"))

Adapt and compress: `finetune` (full or LoRA, `task="sft"` for chat), `distill`, `quantize`,
`Model.chat`, and speculative decoding with `Model.generate(..., draft=smaller_model)`. Share: `card` writes the
model card (README.md), `export_hf` / `export_gguf` carry it along.
"""

from .adapt import LoRAConfig, apply_lora, merge_adapter, merge_lora
from .api import Model, load, load_model
from .card import CardConfig, card
from .config import PRESETS, ModelConfig, ModelOverridesConfig, get_preset
from .data.shards import PrepareConfig, prepare
from .errors import ConfigError, DataError, LmforgeError, ModelDirError
from .generate import Completion, GenerationConfig, generate
from .interop import export_gguf, export_hf, import_gguf, import_hf
from .model import build_model
from .quantize import QuantizeConfig, quantize, quantize_model
from .tasks import TASKS, ClassifyConfig, MLMConfig, Seq2SeqConfig, SFTConfig
from .tokenizers import Tokenizer, train_tokenizer
from .train import TrainConfig, train
from .train.distill import DistillConfig, distill
from .train.finetune import FinetuneConfig, finetune

__version__ = "0.1.0"

__all__ = ["Model", "load", "load_model", "ModelConfig", "ModelOverridesConfig", "TASKS", "PRESETS", "get_preset", "PrepareConfig", "prepare",
           "GenerationConfig", "Completion", "generate", "build_model", "Tokenizer", "train_tokenizer",
           "TrainConfig", "train", "import_hf", "export_hf", "import_gguf", "export_gguf", "LmforgeError", "ConfigError", "DataError",
           "ModelDirError", "FinetuneConfig", "finetune", "ClassifyConfig", "Seq2SeqConfig", "SFTConfig", "MLMConfig",
           "LoRAConfig", "apply_lora", "merge_lora", "merge_adapter", "QuantizeConfig", "quantize", "quantize_model",
           "DistillConfig", "distill", "CardConfig", "card"]
