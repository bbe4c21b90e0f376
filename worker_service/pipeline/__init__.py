"""The ingestion pipeline: nine stages that turn a TV advert video into a stored record.

`base` is the interface the worker runs (stages, an input check, a close); `errors` the
failures a stage or a provider raises; `factory.build_pipeline` assembles the stages and their
providers from configuration, including the gRPC sink through which `persist` stores the advert
in the queue service; `sources` is the one input validator. One module per stage: fetch, probe,
audio, transcription, keyframes, analysis, chunking, embeddings, persist.
"""
