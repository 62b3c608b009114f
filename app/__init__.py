"""Reward-model scoring service; also home of the checkpoint contract shared with `training`."""
