"""The ROS loop's runs record the hypervisor's steal over their window (to tell a stolen VM from slow code)."""

from bench.ros_runs import steal_over


def test_steal_over_a_window_is_a_share_of_all_vcpus(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert steal_over(10.0, 13.0, 30.0) == {"steal_s": 3.0, "steal_fraction": 0.05}


def test_unknown_steal_is_none_not_zero():
    assert steal_over(None, 5.0, 30.0) == {"steal_s": None, "steal_fraction": None}
    assert steal_over(1.0, 2.0, 0.0) == {"steal_s": None, "steal_fraction": None}
