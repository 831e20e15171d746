"""Training: the contrastive-autoregressive objective, LoRA, the trainer loop and checkpoints."""
