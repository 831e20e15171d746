"""Helpers every stage uses and none owns: atomic writes and inter-process locks.

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

__all__ = [
    "file_lock",
    "remove_stale_temps",
    "replace_dir",
    "set_dotted",
    "temp_lock_path",
    "temp_sibling",
    "write_bytes_atomic",
    "write_text",
]
