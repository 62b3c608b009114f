"""`python -m app` is `reward-serve`."""

from app.cli import main

main()
