"""Providers behind small interfaces: object storage, transcription, LLM analysis, embeddings.

A stage depends on an interface from `interfaces`, never on boto3 or openai directly, so that
the pipeline runs with whatever is configured (OpenAI, a local model, nothing) and says which.
"""
