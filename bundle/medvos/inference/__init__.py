"""Streaming few-shot propagation of annotated frames through a cine."""
