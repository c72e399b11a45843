"""The alpha-VAE: three weight-shared VAEs whose latent average decodes the in-between frame."""

from inbetween.train import TrainConfig, checkpoint_config, load_checkpoint, train, train_ensemble
from inbetween.vae import AlphaVAE, VAEConfig, alpha_vae_loss, inbetween, interpolate

__all__ = [
    "AlphaVAE", "TrainConfig", "VAEConfig", "alpha_vae_loss", "checkpoint_config",
    "inbetween", "interpolate", "load_checkpoint", "train", "train_ensemble",
]
