"""Optional CPU machinery behind one hook (`Target.packed_weights`): bf16 linear weights held in the
form this CPU multiplies fastest (packed.py), an AVX2 kernel for a few rows (few_rows.py) and a fused
decoder layer (fused_layer.py), built from kernels/*.cpp at first use. Imported by targets/ and drafts/."""
from .packed import PackedWeights, can_pack, is_packed, linear, many_rows_dtype, packed_linears

__all__ = ["PackedWeights", "can_pack", "is_packed", "linear", "many_rows_dtype", "packed_linears"]
