"""Reward-model training: preference data to servable checkpoints and evaluation reports."""
