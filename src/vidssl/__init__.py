"""vidssl: self-supervised image encoders from long videos (DoRA, DINO-on-video) and their evaluation."""

__version__ = "0.1.0"


def load_encoder(weights: str, **kwargs):
    """Any weights vidssl knows (export, run dir, checkpoint, official DINO/DoRA, timm, `random:NAME`)
    as a timm VisionTransformer. See `vidssl.hub.load_encoder`."""
    from vidssl.hub import load_encoder as _load

    return _load(weights, **kwargs)


__all__ = ["__version__", "load_encoder"]
