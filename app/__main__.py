"""`python -m app` is `reward-serve`."""

from app.cli import main

if __name__ == "__main__":  # the vllm engine spawns processes that re-import the main module
    main()
