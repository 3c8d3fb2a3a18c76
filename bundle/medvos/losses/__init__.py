"""Phase-2 relearning losses."""
