"""The names a config may choose from, in one light module (no torch): the config's type
checks, the model factory, `load_encoder` and the method builder all read them from here."""

from __future__ import annotations

# ViT sizes by name, with their embedding width (how weights of unknown origin are recognised)
ARCH_EMBED_DIMS = {"vit_tiny": 192, "vit_small": 384, "vit_base": 768}
ARCHS = tuple(ARCH_EMBED_DIMS)
PATCH_SIZES = (8, 16)

# method.name -> "module:Class", imported only when a run is built
METHODS = {
    "dino": "vidssl.methods.dino:DINO",
    "dora": "vidssl.methods.dora:DoRA",
    "timet": "vidssl.methods.timet:TimeT",
}
METHOD_NAMES = tuple(METHODS)
