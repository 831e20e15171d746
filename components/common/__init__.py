"""Helpers every stage uses and none owns: atomic writes, inter-process locks, shard plans.

from components.common import file_lock, replace_dir, temp_sibling, write_bytes_atomic, write_text
"""

from components.common.atomic import (
    remove_stale_temps,
    replace_dir,
    temp_sibling,
    write_bytes_atomic,
    write_text,
)
from components.common.dotted import set_dotted
from components.common.locks import file_lock, temp_lock_path
from components.common.quiet import quiet_logger
from components.common.secret import read_secret
from components.common.shards import (
    Shard,
    ShardPlan,
    ShardResult,
    ShardStore,
    file_digest,
    inputs_key,
    parquet_bytes,
    shard_summary,
    worker_cached,
    worker_name,
)
from components.common.tracking import USER_TAG, acting_user, is_server_uri

__all__ = [
    "USER_TAG",
    "acting_user",
    "is_server_uri",
    "read_secret",
    "Shard",
    "ShardPlan",
    "ShardResult",
    "ShardStore",
    "file_digest",
    "file_lock",
    "inputs_key",
    "parquet_bytes",
    "quiet_logger",
    "remove_stale_temps",
    "replace_dir",
    "set_dotted",
    "shard_summary",
    "temp_lock_path",
    "temp_sibling",
    "worker_cached",
    "worker_name",
    "write_bytes_atomic",
    "write_text",
]
