"""Divolte Collector's default event record, and writers for it in Avro and Parquet.

The schema is Divolte's ``io.divolte.record.DefaultEventRecord`` field for
field, so files written here read like the ones Divolte's HDFS sink writes,
and a mapping that works on one works on the other.
"""

from __future__ import annotations

from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

_OPTIONAL_STRINGS = [
    "referer",
    "location",
]
_USER_AGENT_FIELDS = [
    "userAgentString",
    "userAgentName",
    "userAgentFamily",
    "userAgentVendor",
    "userAgentType",
    "userAgentVersion",
    "userAgentDeviceCategory",
    "userAgentOsFamily",
    "userAgentOsVersion",
    "userAgentOsVendor",
]
_SIZES = ["viewportPixelWidth", "viewportPixelHeight", "screenPixelWidth", "screenPixelHeight"]
_IDS = ["partyId", "sessionId", "pageViewId"]

DEFAULT_EVENT_RECORD: dict = {
    "namespace": "io.divolte.record",
    "type": "record",
    "name": "DefaultEventRecord",
    "fields": [
        {"name": "detectedDuplicate", "type": "boolean"},
        {"name": "detectedCorruption", "type": "boolean"},
        {"name": "firstInSession", "type": "boolean"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "clientTimestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "remoteHost", "type": "string"},
        *({"name": name, "type": ["null", "string"], "default": None} for name in _OPTIONAL_STRINGS),
        *({"name": name, "type": ["null", "int"], "default": None} for name in _SIZES),
        *({"name": name, "type": ["null", "string"], "default": None} for name in _IDS),
        {"name": "eventType", "type": "string", "default": "unknown"},
        *({"name": name, "type": ["null", "string"], "default": None} for name in _USER_AGENT_FIELDS),
    ],
}
"""Divolte's ``DefaultEventRecord.avsc``, as a Python dict for fastavro."""

ARROW_SCHEMA = pa.schema(
    [
        pa.field("detectedDuplicate", pa.bool_(), nullable=False),
        pa.field("detectedCorruption", pa.bool_(), nullable=False),
        pa.field("firstInSession", pa.bool_(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms"), nullable=False),
        pa.field("clientTimestamp", pa.timestamp("ms"), nullable=False),
        pa.field("remoteHost", pa.string(), nullable=False),
        *(pa.field(name, pa.string()) for name in _OPTIONAL_STRINGS),
        *(pa.field(name, pa.int32()) for name in _SIZES),
        *(pa.field(name, pa.string()) for name in _IDS),
        pa.field("eventType", pa.string(), nullable=False),
        *(pa.field(name, pa.string()) for name in _USER_AGENT_FIELDS),
    ]
)
"""The same record as an Arrow schema: the column layout of the Parquet copy."""


def write_avro(events: pa.Table, path: Path) -> None:
    """Write ``events`` (in :data:`ARROW_SCHEMA`) as one Avro container file.

    Timestamps go out as epoch milliseconds, as Divolte writes them.
    """
    columns = events.cast(ARROW_SCHEMA).to_pydict()
    for name in ("timestamp", "clientTimestamp"):
        columns[name] = events.column(name).cast(pa.int64()).to_pylist()
    names = list(columns)
    records = (dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(DEFAULT_EVENT_RECORD), records, codec="deflate")


def write_parquet(events: pa.Table, path: Path) -> None:
    """Write ``events`` as one Parquet file with Divolte's column names and types."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(events.cast(ARROW_SCHEMA), path, compression="zstd")
