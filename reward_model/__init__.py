"""What a reward model is, shared by serving (`app/`), training (`training/`) and the benchmark.

The checkpoint and ensemble files, input formatting and truncation, batching into tensors and
reading rewards, the one loader that opens a checkpoint or ensemble for scoring, and the one pure
ensemble combiner. Nothing here imports FastAPI or the trainer.
"""
