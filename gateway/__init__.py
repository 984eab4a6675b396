"""OpenAI-compatible gateway and engine supervisor for comparing two vLLM-served models."""
