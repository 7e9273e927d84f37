"""Chunks whose sizes or integers overflow a naive check.

Each is INVALID_ARGUMENT with a counted reason, nothing is stored, and the server keeps serving
(issue 12: they were UNKNOWN with a server traceback).
"""

import grpc
import pytest
from cloud_brain.experience.ingest import validate_chunk
from cloud_brain.tasks import TaskSpec
from cloud_testlib import make_batch
from nestor_core import nestor_pb2, nestor_pb2_grpc
from nestor_core.experience import ChunkError, to_chunk
from nestor_core.tensors import TensorError, from_tensor


def _big_shape(chunk):
    del chunk.obs.shape[:]
    chunk.obs.shape.extend([2**62, 4])  # 2**62 * 4 * 4 bytes wraps to 0 in int64


def _many_dims(chunk):
    del chunk.cost.shape[:]
    chunk.cost.shape.extend([1] * 70)


def _huge_seq(chunk):
    chunk.first_seq = 2**63 + 1


def _seq_overflow(chunk):
    chunk.first_seq = 2**63 - 2  # + count - 1 passes 2**63 - 1


def _dropped_before_start(chunk):
    chunk.dropped_before = 2**64 - 1


def _dropped_before_seq_one(chunk):
    chunk.dropped_before = 1  # nothing can precede seq 1 (the server's rule; from_chunk allows it)


def _huge_version(chunk):
    chunk.model_version = 2**64 - 1


CASES = {
    "shape_product": (_big_shape, "bad_tensor", "obs: shape"),
    "seventy_dims": (_many_dims, "bad_tensor", "70 dimensions, at most 8"),
    "first_seq_2**63+1": (_huge_seq, "bad_sequence", "exceeds the largest seq"),
    "last_seq_overflow": (_seq_overflow, "bad_sequence", "exceeds the largest seq"),
    "dropped_before": (_dropped_before_start, "bad_sequence", "dropped_before"),
    "dropped_before_seq_one": (_dropped_before_seq_one, "bad_sequence", "cannot precede it"),
    "model_version": (_huge_version, "bad_sequence", "model_version"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_chunk_refuses_with_a_reason(case):
    edit, reason, fragment = CASES[case]
    chunk = to_chunk(make_batch(robot="r1", first_seq=1, n=5))
    edit(chunk)
    with pytest.raises(ChunkError, match=fragment) as info:
        validate_chunk(chunk, {"arm": TaskSpec("arm", "arm.yaml", 3, 2)})
    assert info.value.reason == reason


def test_from_tensor_sizes_are_python_integers():
    tensor = nestor_pb2.Tensor(dtype="float32", shape=[2**62, 4], data=b"")
    with pytest.raises(TensorError, match="needs 73786976294838206464 bytes"):
        from_tensor(tensor, "t")
    assert from_tensor(nestor_pb2.Tensor(dtype="float32", shape=[0, 4], data=b""), "t").shape == (0, 4)


def test_server_answers_invalid_argument_and_counts_every_case(server):
    with grpc.insecure_channel(server.address) as channel:
        stub = nestor_pb2_grpc.ExperienceStub(channel)
        for case, (edit, _reason, fragment) in sorted(CASES.items()):
            chunk = to_chunk(make_batch(robot="r1", first_seq=1, n=5))
            edit(chunk)
            with pytest.raises(grpc.RpcError) as info:
                list(stub.Ingest(iter([chunk]), timeout=10))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (case, info.value.details())
            assert fragment in info.value.details(), case
        # Nothing of them was stored, and the server still takes a good chunk.
        (ack,) = list(stub.Ingest(iter([to_chunk(make_batch(robot="r1", first_seq=1, n=5))]), timeout=10))
        assert (ack.acked_through_seq, ack.stored) == (5, 5)
        status = nestor_pb2_grpc.FleetStub(channel).GetStatus(nestor_pb2.StatusRequest(), timeout=10)
    expected = {}
    for _, reason, _ in CASES.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert dict(status.rejected_by_reason) == expected
    assert status.transitions_stored == 5
