from vidssl.models.encoder import Encoder, LastAttention
from vidssl.models.head import DINOHead
from vidssl.models.vit import create_vit, timm_model_name

__all__ = ["DINOHead", "Encoder", "LastAttention", "create_vit", "timm_model_name"]
