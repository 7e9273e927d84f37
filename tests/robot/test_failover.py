"""cloud_address lists replicas: parsing errors name the field; the failover rule moves on, then backs off."""

import pytest
from nestor_robot.failover import Failover, parse_addresses


def test_one_or_several_addresses():
    assert parse_addresses("127.0.0.1:50051") == ["127.0.0.1:50051"]
    assert parse_addresses(" 127.0.0.1:1, 127.0.0.1:2 ,") == ["127.0.0.1:1", "127.0.0.1:2"]


@pytest.mark.parametrize("value", ["", ",", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:0", ":5", "a:1,a:1"])
def test_bad_addresses_name_the_field(value):
    with pytest.raises(ValueError, match="^cloud_address: "):
        parse_addresses(value)


def test_moves_to_the_next_replica_at_once_and_backs_off_after_a_full_cycle():
    f = Failover("a:1,b:2,c:3")
    assert f.current == "a:1"
    assert f.failed() is False and f.current == "b:2"
    assert f.failed() is False and f.current == "c:3"
    assert f.failed() is True and f.current == "a:1"  # all three failed in a row: back off
    f.failed()
    f.progressed()  # b works: the next failure starts a new cycle
    assert f.current == "b:2" and f.failed() is False and f.failovers == 5


def test_a_single_address_always_backs_off():
    f = Failover("a:1")
    assert f.failed() is True and f.failed() is True and f.current == "a:1" and f.failovers == 0
