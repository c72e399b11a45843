"""The alpha-VAE: three weight-shared VAEs whose latent average decodes the in-between frame."""
