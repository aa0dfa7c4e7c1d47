"""tinycl: on-device continual learning with Quantized Latent Replays."""

__version__ = "0.1.0"
