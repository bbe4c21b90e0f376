"""Providers behind small interfaces: object storage, transcription, LLM analysis, embeddings,
and the advert sink (the queue service's AdvertService over gRPC).

A stage depends on an interface from `interfaces`, never on boto3 or openai directly, so that
the pipeline runs with whatever is configured (OpenAI, a local model, nothing) and says which.
Providers import nothing of the pipeline but its error classes (`pipeline.errors`).
"""
