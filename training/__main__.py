"""`python -m training` is `reward-train`."""

from training.cli import train_main

train_main()
