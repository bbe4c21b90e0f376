"""The ingestion pipeline: nine stages that turn a TV advert video into a stored record.

`base` is the interface the worker runs; `factory.build_pipeline` assembles the stages and
their providers from configuration; `grpc_sink.GrpcAdvertSink` persists through the queue
service. One module per stage: fetch, probe, audio, transcription, keyframes, analysis,
chunking, embeddings, persist.
"""
