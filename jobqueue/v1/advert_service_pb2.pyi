import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Keyframe(_message.Message):
    __slots__ = ("timestamp_seconds", "uri", "width", "height")
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    timestamp_seconds: float
    uri: str
    width: int
    height: int
    def __init__(self, timestamp_seconds: _Optional[float] = ..., uri: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "text", "kind", "embedding", "embedding_model")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    kind: str
    embedding: _containers.RepeatedScalarFieldContainer[float]
    embedding_model: str
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., kind: _Optional[str] = ..., embedding: _Optional[_Iterable[float]] = ..., embedding_model: _Optional[str] = ...) -> None: ...

class Advert(_message.Message):
    __slots__ = ("id", "source_key", "job_id", "media", "transcript", "analysis", "keyframes", "chunks", "provenance", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    ANALYSIS_FIELD_NUMBER: _ClassVar[int]
    KEYFRAMES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    source_key: str
    job_id: str
    media: _struct_pb2.Struct
    transcript: str
    analysis: _struct_pb2.Struct
    keyframes: _containers.RepeatedCompositeFieldContainer[Keyframe]
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    provenance: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., source_key: _Optional[str] = ..., job_id: _Optional[str] = ..., media: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., transcript: _Optional[str] = ..., analysis: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., keyframes: _Optional[_Iterable[_Union[Keyframe, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., provenance: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StoreAdvertRequest(_message.Message):
    __slots__ = ("advert", "job_id", "lease")
    ADVERT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    advert: Advert
    job_id: str
    lease: int
    def __init__(self, advert: _Optional[_Union[Advert, _Mapping]] = ..., job_id: _Optional[str] = ..., lease: _Optional[int] = ...) -> None: ...

class StoreAdvertResponse(_message.Message):
    __slots__ = ("ad_id", "created")
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    created: bool
    def __init__(self, ad_id: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class GetAdvertRequest(_message.Message):
    __slots__ = ("ad_id",)
    AD_ID_FIELD_NUMBER: _ClassVar[int]
    ad_id: str
    def __init__(self, ad_id: _Optional[str] = ...) -> None: ...
