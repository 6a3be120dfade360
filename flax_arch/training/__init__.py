"""Training: the trainer, its tasks, data, checkpoints and the GAN step."""
