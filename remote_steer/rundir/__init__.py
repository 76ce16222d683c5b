"""The run directory, owned in one place: paths, atomic writes, the typed run record,
the job journal's files, the vector file format, the lock and the one reader.

The ground floor: imports nothing of remote_steer but ``errors``. Everything else
reads and writes a run through ``RunDir``.
"""

from remote_steer.rundir.files import (
    atomic_write,
    git_commit,
    package_versions,
    share,
    share_tree,
    slug,
    writable_dir,
    write_csv,
    write_json,
    write_parquet,
)
from remote_steer.rundir.layout import RunDir
from remote_steer.rundir.lock import RunLocked
from remote_steer.rundir.manifest import SCHEMA_VERSION, Manifest, RunDamaged
from remote_steer.rundir.parts import PROVENANCE_COLUMNS, Provenance, where_computed

__all__ = [
    "PROVENANCE_COLUMNS",
    "SCHEMA_VERSION",
    "Manifest",
    "Provenance",
    "RunDamaged",
    "RunDir",
    "RunLocked",
    "atomic_write",
    "git_commit",
    "package_versions",
    "share",
    "share_tree",
    "slug",
    "where_computed",
    "writable_dir",
    "write_csv",
    "write_json",
    "write_parquet",
]
