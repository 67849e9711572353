"""The pipeline's steps between ingest and publishing: item-item lists, the visual stage, evaluation and tuning."""
