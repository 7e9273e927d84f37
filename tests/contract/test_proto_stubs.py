"""The .proto is the source of truth: checked-in stubs are current, and the wire types round-trip.

- Regenerating with proto/generate.py gives byte-identical nestor_pb2.py, nestor_pb2.pyi and
  nestor_pb2_grpc.py (run `make proto` when this fails; the stubs are excluded from ruff so that
  nothing reformats them).
- nestor_core.tensors and nestor_core.experience round-trip arbitrary arrays and batches through
  serialised bytes, and reject malformed messages with errors that name the field.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from nestor_core import nestor_pb2
from nestor_core.experience import ChunkError, ExperienceBatch, from_chunk, to_chunk
from nestor_core.tensors import TensorError, from_tensor, to_tensor

REPO = pathlib.Path(__file__).resolve().parents[2]
STUB_DIR = REPO / "ros2_ws/src/nestor_core/nestor_core"
STUBS = ["nestor_pb2.py", "nestor_pb2.pyi", "nestor_pb2_grpc.py"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run([sys.executable, str(REPO / "proto/generate.py"), "--out", str(out)], check=True, timeout=120)
    return out / "nestor_core"


def test_generator_writes_exactly_the_checked_in_files(generated):
    assert sorted(p.name for p in generated.iterdir()) == sorted(STUBS)
    checked_in = {p.name for p in STUB_DIR.glob("nestor_pb2*")}
    assert checked_in == set(STUBS)


@pytest.mark.parametrize("name", STUBS)
def test_checked_in_stub_is_current(generated, name):
    fresh = (generated / name).read_bytes()
    assert fresh, name
    assert (STUB_DIR / name).read_bytes() == fresh, f"{name} is stale: run `make proto`"


def test_staleness_is_detected(generated, tmp_path):
    # The comparison above must notice a change in the .proto: add a field, regenerate, compare.
    proto = REPO / "proto/nestor_core/nestor.proto"
    edited = tmp_path / "proto/nestor_core/nestor.proto"
    edited.parent.mkdir(parents=True)
    edited.write_text(proto.read_text().replace("bytes data = 3;", "bytes data = 3;\n  string unit = 4;", 1))
    assert edited.read_text() != proto.read_text()
    from grpc_tools import protoc

    include = pathlib.Path(protoc.__file__).parent / "_proto"
    out = tmp_path / "out"
    out.mkdir()
    rc = protoc.main(["protoc", f"-I{tmp_path / 'proto'}", f"-I{include}", f"--python_out={out}", str(edited)])
    assert rc == 0
    assert (out / "nestor_core/nestor_pb2.py").read_bytes() != (generated / "nestor_pb2.py").read_bytes()


# --- Tensor ----------------------------------------------------------------------------------------

DTYPES = st.sampled_from(["float32", "float64", "int64"])
ARRAYS = DTYPES.flatmap(
    lambda dtype: hnp.arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=5))
)


@given(ARRAYS)
@settings(max_examples=100, deadline=None)
def test_tensor_round_trip(array):
    wire = nestor_pb2.Tensor.FromString(to_tensor(array).SerializeToString())
    back = from_tensor(wire)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)  # NaN == NaN here: the tensor layer carries them


def test_tensor_round_trip_scalar():
    assert from_tensor(to_tensor(np.float32(2.5) * np.ones((), np.float32))).shape == ()


@given(ARRAYS, st.integers(min_value=1, max_value=16), st.booleans())
@settings(max_examples=50, deadline=None)
def test_tensor_wrong_byte_length(array, delta, extra):
    tensor = to_tensor(array)
    data = tensor.data + b"\0" * delta if extra or not tensor.data else tensor.data[:-delta]
    with pytest.raises(TensorError, match="obs: shape"):
        from_tensor(nestor_pb2.Tensor(dtype=tensor.dtype, shape=tensor.shape, data=data), "obs")


@pytest.mark.parametrize("dtype", ["float16", "int32", "uint8", "", "object"])
def test_tensor_rejects_dtype(dtype):
    with pytest.raises(TensorError, match="dtype"):
        from_tensor(nestor_pb2.Tensor(dtype=dtype, shape=[1], data=b"\0" * 8))


def test_tensor_rejects_negative_dimension_and_unknown_numpy_dtype():
    with pytest.raises(TensorError, match="negative"):
        from_tensor(nestor_pb2.Tensor(dtype="float32", shape=[-1], data=b""))
    with pytest.raises(TensorError, match="dtype"):
        to_tensor(np.zeros(2, np.int32))


def test_tensor_bytes_are_little_endian():
    tensor = to_tensor(np.array([1.0], dtype=">f8"))
    assert tensor.dtype == "float64" and tensor.data == np.array([1.0], "<f8").tobytes()


# --- ExperienceChunk -------------------------------------------------------------------------------

FINITE32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)


@st.composite
def batches(draw) -> ExperienceBatch:
    n = draw(st.integers(1, 12))
    obs_dim = draw(st.integers(1, 6))
    act_dim = draw(st.integers(1, 4))

    def f32(*shape):
        return draw(hnp.arrays(np.float32, shape, elements=FINITE32))

    return ExperienceBatch(
        robot_id=draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)),
        task=draw(st.sampled_from(["kuka_track", "crane"])),
        first_seq=draw(st.integers(1, 2**40)),
        obs=f32(n, obs_dim),
        action=f32(n, act_dim),
        cost=f32(n),
        fast_read=f32(n, act_dim),
        slow_read=f32(n, act_dim),
        surprise=f32(n),
        stamp=draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1e9))),
        model_versions=draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2**31))),
        l1_state=f32(draw(st.integers(0, 8))),
        dropped_before=draw(st.integers(0, 1000)),
        tags=draw(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3)),
    )


ARRAY_FIELDS = ["obs", "action", "cost", "fast_read", "slow_read", "surprise", "stamp", "model_versions", "l1_state"]


def _wire(batch: ExperienceBatch) -> nestor_pb2.ExperienceChunk:
    return nestor_pb2.ExperienceChunk.FromString(to_chunk(batch).SerializeToString())


@given(batches())
@settings(max_examples=60, deadline=None)
def test_chunk_round_trip(batch):
    chunk = _wire(batch)
    assert chunk.count == len(batch) and chunk.model_version == batch.model_versions[0]
    back = from_chunk(chunk, obs_dim=batch.obs.shape[1], act_dim=batch.action.shape[1])
    for name in ARRAY_FIELDS:
        got, want = getattr(back, name), getattr(batch, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert (back.robot_id, back.task, back.first_seq) == (batch.robot_id, batch.task, batch.first_seq)
    assert (back.dropped_before, back.tags, back.last_seq) == (batch.dropped_before, batch.tags, batch.last_seq)


@given(batches(), st.sampled_from(ARRAY_FIELDS), st.sampled_from([np.nan, np.inf, -np.inf]), st.data())
@settings(max_examples=60, deadline=None)
def test_chunk_rejects_non_finite(batch, name, bad, data):
    array = getattr(batch, name)
    if name == "model_versions" or array.size == 0:
        return  # integers cannot hold NaN; an empty l1_state has nowhere to put one
    array = array.copy()
    array.flat[data.draw(st.integers(0, array.size - 1))] = bad
    setattr(batch, name, array)
    with pytest.raises(ChunkError, match=name) as err:
        from_chunk(_wire(batch))
    assert err.value.reason == "non_finite"


@given(batches(), st.sampled_from(["obs", "act"]), st.integers(1, 3))
@settings(max_examples=40, deadline=None)
def test_chunk_rejects_wrong_width(batch, kind, delta):
    obs_dim, act_dim = batch.obs.shape[1], batch.action.shape[1]
    if kind == "obs":
        obs_dim += delta
    else:
        act_dim += delta
    with pytest.raises(ChunkError, match="width") as err:
        from_chunk(_wire(batch), obs_dim=obs_dim, act_dim=act_dim)
    assert err.value.reason == "bad_shape"


@given(batches(), st.sampled_from(["action", "fast_read", "slow_read"]))
@settings(max_examples=30, deadline=None)
def test_chunk_rejects_inconsistent_action_widths(batch, name):
    # Without task dims the widths must still agree with each other.
    array = getattr(batch, name)
    setattr(batch, name, np.concatenate([array, array[:, :1]], axis=1))
    with pytest.raises(ChunkError, match="width"):
        from_chunk(_wire(batch))


@given(batches(), st.sampled_from(ARRAY_FIELDS[:-1]), st.integers(1, 16))
@settings(max_examples=40, deadline=None)
def test_chunk_rejects_wrong_byte_length(batch, name, cut):
    chunk = _wire(batch)
    tensor = getattr(chunk, name)
    tensor.data = tensor.data[: max(0, len(tensor.data) - cut)]
    with pytest.raises(ChunkError, match=name) as err:
        from_chunk(chunk)
    assert err.value.reason == "bad_tensor"


@given(batches(), st.sampled_from(ARRAY_FIELDS[:-1]))
@settings(max_examples=40, deadline=None)
def test_chunk_rejects_row_count_mismatch(batch, name):
    chunk = _wire(batch)
    chunk.count += 1
    with pytest.raises(ChunkError) as err:
        from_chunk(chunk)
    assert err.value.reason == "bad_shape"


def _crane_batch(obs_dim: int) -> ExperienceBatch:
    """Two valid crane transitions of robot0 from seq 1 (obs of `obs_dim`, one action)."""
    ones = np.ones((2, 1), np.float32)
    return ExperienceBatch(
        robot_id="robot0",
        task="crane",
        first_seq=1,
        obs=np.ones((2, obs_dim), np.float32),
        action=ones,
        cost=ones[:, 0],
        fast_read=ones,
        slow_read=ones,
        surprise=ones[:, 0],
        stamp=np.zeros(2),
        model_versions=np.ones(2, np.int64),
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [("robot_id", "", "missing_robot_id"), ("task", "", "missing_task"), ("first_seq", 0, "bad_sequence")],
)
def test_chunk_rejects_header(field, value, reason):
    good = _crane_batch(obs_dim=3)
    chunk = _wire(good)
    from_chunk(chunk, obs_dim=3, act_dim=1)
    setattr(chunk, field, value)
    with pytest.raises(ChunkError) as err:
        from_chunk(chunk)
    assert err.value.reason == reason


def test_chunk_rejects_wrong_dtype():
    batch = _crane_batch(obs_dim=1)
    chunk = _wire(batch)
    chunk.cost.CopyFrom(to_tensor(np.ones(2, np.float64)))
    with pytest.raises(ChunkError, match="cost") as err:
        from_chunk(chunk)
    assert err.value.reason == "bad_dtype"
