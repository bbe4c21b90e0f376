"""What the LLM analysis stage asks for: the advert's structured description.

Written as a JSON Schema in OpenAI's strict structured-output dialect (every property required,
no additional properties, "null" where a value may be unknown), so the model cannot return a
shape the rest of the pipeline does not expect.
"""

from __future__ import annotations

from typing import Any

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}

ANALYSIS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "brand",
        "product",
        "category",
        "tone",
        "claims",
        "call_to_action",
        "target_audience",
        "language",
        "summary",
    ],
    "properties": {
        "brand": {**_NULLABLE_STRING, "description": "The advertised brand, null if unclear."},
        "product": {**_NULLABLE_STRING, "description": "The product or service advertised."},
        "category": {**_NULLABLE_STRING, "description": "Market category, e.g. soft drinks."},
        "tone": {**_NULLABLE_STRING, "description": "Overall tone, e.g. upbeat, serious."},
        "claims": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Claims the advert makes about the product, as stated.",
        },
        "call_to_action": {**_NULLABLE_STRING, "description": "What viewers are asked to do."},
        "target_audience": {**_NULLABLE_STRING, "description": "Who the advert addresses."},
        "language": {**_NULLABLE_STRING, "description": "Spoken language (ISO 639-1)."},
        "summary": {"type": "string", "description": "Two or three sentences on the advert."},
    },
}

ANALYSIS_FIELDS: tuple[str, ...] = tuple(ANALYSIS_SCHEMA["required"])
