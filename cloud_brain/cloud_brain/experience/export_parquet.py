"""Parquet export of one robot's experience: a flat table researchers train on (pyarrow).

LeRobotDataset was the first choice. Its packages do not install beside the project's pins here:
``lerobot`` 0.4.4 (the newest for Python 3.11) pulls torch 2.10 and torchvision, and
``lerobot-dataset`` 0.4.4 pins numpy 2.2.6 and opencv 4.12 (the project pins 2.4.6 and 5.0).

Schema (one row per transition, in seq order; ``FORMAT_VERSION`` 1)::

    seq            int64                        robot's sequence number (1.., gaps = dropped)
    stamp          float64                      robot clock, unix seconds
    model_version  int64                        model version that produced the action
    obs            fixed_size_list<float32>[D]  concat(q_c, qd_c, q_ref, qd_ref, q_p, qd_p)
    action         fixed_size_list<float32>[A]  effort sent (after clipping)
    cost           float32                      task cost of the tick (reward = -cost)
    fast_read      fixed_size_list<float32>[A]  L0 fast-memory part of the action
    l1_read        fixed_size_list<float32>[A]  L1 memory part of the action
    surprise       float32                      norm of the L0 prediction error

The schema metadata key ``nestor`` holds JSON: ``format_version``, ``robot_id``, ``task``,
``controlled_joints``, ``passive_joints``, ``obs_layout`` (block name -> [start, stop) columns),
``first_seq``, ``last_seq``, ``dropped_ranges`` and the sim's ``shift_events``.
``cloud_brain.experience.dataset.load`` reads it back. The file is written to ``<out>.part`` and renamed when
it is complete.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cloud_brain.experience.export import ExportError, JointLayout, Selection, replacing, select, summary
from cloud_brain.experience.store import ExperienceStore

FORMAT_VERSION = 1
METADATA_KEY = b"nestor"


def schema(obs_dim: int, act_dim: int, metadata: dict | None = None) -> pa.Schema:
    """The table schema for these dims (see the module docstring)."""
    vec = lambda n: pa.list_(pa.float32(), n)  # noqa: E731
    fields = [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("stamp", pa.float64(), nullable=False),
        pa.field("model_version", pa.int64(), nullable=False),
        pa.field("obs", vec(obs_dim), nullable=False),
        pa.field("action", vec(act_dim), nullable=False),
        pa.field("cost", pa.float32(), nullable=False),
        pa.field("fast_read", vec(act_dim), nullable=False),
        pa.field("l1_read", vec(act_dim), nullable=False),
        pa.field("surprise", pa.float32(), nullable=False),
    ]
    meta = {METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()} if metadata else None
    return pa.schema(fields, metadata=meta)


def _fixed(matrix: np.ndarray) -> pa.FixedSizeListArray:
    matrix = np.ascontiguousarray(matrix, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def _obs_layout(layout: JointLayout) -> dict[str, list[int]]:
    n, m = len(layout.controlled), len(layout.passive)
    bounds = np.cumsum([0, n, n, n, n, m, m]).tolist()
    names = ("q_c", "qd_c", "q_ref", "qd_ref", "q_p", "qd_p")
    return {name: [bounds[i], bounds[i + 1]] for i, name in enumerate(names)}


def write(
    path: str, store: ExperienceStore, selection: Selection, layout: JointLayout, events: list[dict] = ()
) -> dict:
    """Writes the selection to a Parquet file at ``path``; returns a summary.

    Raises:
        ExportError: nothing stored in the selection, or the observation width does not fit.
    """
    batches = []
    for batch, rows in select(store, selection):
        if batch.obs.shape[1] != layout.obs_dim:
            raise ExportError(
                f"obs: width {batch.obs.shape[1]} of seq {batch.first_seq}, "
                f"expected {layout.obs_dim} for the task's joints"
            )
        batches.append(
            pa.record_batch(
                [
                    pa.array(batch.first_seq + rows.astype(np.int64)),
                    pa.array(batch.stamp[rows]),
                    pa.array(batch.model_versions[rows].astype(np.int64)),
                    _fixed(batch.obs[rows]),
                    _fixed(batch.action[rows]),
                    pa.array(batch.cost[rows]),
                    _fixed(batch.fast_read[rows]),
                    _fixed(batch.slow_read[rows]),
                    pa.array(batch.surprise[rows]),
                ],
                schema=schema(layout.obs_dim, len(layout.controlled)),
            )
        )
        task = batch.task
    if not batches:
        raise ExportError(f"robot: no stored transition of {selection.robot_id!r} in the selection")
    first, last = batches[0].column(0)[0].as_py(), batches[-1].column(0)[-1].as_py()
    dropped = [(s, c) for s, c in store.dropped_ranges(selection.robot_id) if s <= last and s + c > first]
    metadata = {
        "format_version": FORMAT_VERSION,
        "robot_id": selection.robot_id,
        "task": task,
        "controlled_joints": list(layout.controlled),
        "passive_joints": list(layout.passive),
        "obs_layout": _obs_layout(layout),
        "first_seq": first,
        "last_seq": last,
        "dropped_ranges": dropped,
        "shift_events": list(events),
    }
    table = pa.Table.from_batches(batches).replace_schema_metadata(
        schema(layout.obs_dim, len(layout.controlled), metadata).metadata
    )
    with replacing(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return summary(path, "parquet", selection, task, first, last, table.num_rows)
