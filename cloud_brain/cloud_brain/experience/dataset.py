"""Loader of the Parquet experience dataset (``nestor-cloud export --format parquet``).

    from cloud_brain.experience.dataset import load
    data = load("robot0.parquet")
    data.obs.shape, data.meta["controlled_joints"], data[0]["action"]
    loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=True)  # rows collate to tensors

Needs only numpy and pyarrow (``pandas.read_parquet`` reads the same file too).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cloud_brain.experience.export_parquet import FORMAT_VERSION, METADATA_KEY

COLUMNS = ("seq", "stamp", "model_version", "obs", "action", "cost", "fast_read", "l1_read", "surprise")


class DatasetError(ValueError):
    """The file is not a nestor experience dataset this loader reads; the message says why."""


@dataclasses.dataclass
class ExperienceDataset:
    """One robot's transitions as numpy arrays (rows in seq order), plus the file's metadata.

    Attributes:
        meta: the ``nestor`` metadata (robot_id, task, joint names, obs_layout, seq range,
            dropped_ranges, shift_events).
        seq, stamp, model_version, cost, surprise: [N] columns.
        obs: [N, obs_dim]; action, fast_read, l1_read: [N, act_dim].
    """

    meta: dict
    seq: np.ndarray
    stamp: np.ndarray
    model_version: np.ndarray
    obs: np.ndarray
    action: np.ndarray
    cost: np.ndarray
    fast_read: np.ndarray
    l1_read: np.ndarray
    surprise: np.ndarray

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Row i as a dict of arrays (the form torch's default collate turns into tensors)."""
        return {name: getattr(self, name)[i] for name in COLUMNS}

    def block(self, name: str) -> np.ndarray:
        """Columns of one obs block: q_c, qd_c, q_ref, qd_ref, q_p or qd_p."""
        start, stop = self.meta["obs_layout"][name]
        return self.obs[:, start:stop]


def load(path: str | os.PathLike) -> ExperienceDataset:
    """Reads a dataset file.

    Raises:
        DatasetError: no nestor metadata, an unknown format_version or a missing column.
        OSError: the file cannot be read.
    """
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DatasetError(f"{path}: no 'nestor' schema metadata (not a nestor export)")
    meta = json.loads(raw)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(f"{path}: format_version {meta.get('format_version')!r}, this loader reads {FORMAT_VERSION}")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: missing columns {', '.join(missing)}")
    columns = {}
    for name in COLUMNS:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            columns[name] = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        else:
            columns[name] = column.to_numpy()
    return ExperienceDataset(meta=meta, **columns)
