"""The authorisation rules, as plain functions, without gRPC."""

import cloud_brain.service.authz as authz
import pytest
from cloud_brain.service.authz import Identity, PermissionDenied

ROBOT0 = {
    "transport_security_type": [b"ssl"],
    "x509_common_name": [b"robot0"],
    "peer_uri": [b"nestor://robot/robot0"],
    "x509_subject_alternative_name": [b"nestor://robot/robot0"],
}
ADMIN = {"x509_common_name": [b"admin"], "x509_subject_alternative_name": [b"nestor://admin/admin"]}


@pytest.mark.parametrize(
    ("auth", "identity"),
    [
        (ROBOT0, Identity("robot0", "robot")),
        (ADMIN, Identity("admin", "admin")),
        ({"x509_common_name": [b"robot7"]}, Identity("robot7", "robot")),  # no role URI: a robot
        ({"x509_common_name": [b"admin"]}, Identity("admin", "robot")),  # the CN alone never makes an admin
        ({"x509_common_name": [b"robot0"], "peer_uri": [b"nestor://admin/robot0"]}, Identity("robot0", "admin")),
        ({"x509_common_name": [b"robot0"], "peer_uri": [b"nestor://admin/admin"]}, None),  # URI name != CN
        ({"x509_common_name": [b"robot0"], "peer_uri": [b"nestor://root/robot0"]}, None),  # unknown role
        ({"transport_security_type": [b"insecure"]}, None),
        ({}, None),
    ],
)
def test_identity_from_auth_context(auth, identity):
    assert authz.identity_from_auth_context(auth) == identity


def test_a_robot_uploads_only_its_own_experience():
    robot0 = Identity("robot0", "robot")
    authz.check_upload(robot0, "robot0")
    for who, robot_id in ((robot0, "robot1"), (robot0, ""), (Identity("admin", "admin"), "admin")):
        with pytest.raises(PermissionDenied) as err:
            authz.check_upload(who, robot_id)
        assert err.value.reason == "forged_robot_id"
    with pytest.raises(PermissionDenied) as err:
        authz.check_upload(None, "robot0")
    assert err.value.reason == "unauthenticated"


def test_a_robot_subscribes_only_as_itself():
    robot0, admin = Identity("robot0", "robot"), Identity("admin", "admin")
    authz.check_subscribe(robot0, "robot0")
    authz.check_subscribe(admin, "robot1")  # an operator may watch what robot1 would get
    with pytest.raises(PermissionDenied) as err:
        authz.check_subscribe(robot0, "robot1")
    assert err.value.reason == "forged_robot_id"
    with pytest.raises(PermissionDenied) as err:
        authz.check_subscribe(None, "robot0")
    assert err.value.reason == "unauthenticated"


def test_admin_operations_need_the_admin_role():
    authz.check_admin(Identity("admin", "admin"), "Promote")
    with pytest.raises(PermissionDenied, match="Promote") as err:
        authz.check_admin(Identity("robot0", "robot"), "Promote")
    assert err.value.reason == "not_admin"
    with pytest.raises(PermissionDenied):
        authz.check_admin(None, "Rollback")


def test_reads_need_any_identity():
    authz.check_read(Identity("robot0", "robot"))
    authz.check_read(Identity("admin", "admin"))
    with pytest.raises(PermissionDenied):
        authz.check_read(None)


class _Context:
    def __init__(self, auth):
        self.auth = auth
        self.calls = 0

    def auth_context(self):
        self.calls += 1
        return self.auth


def test_authorizer_enforces_only_when_told():
    context = _Context({})
    authz.ALLOW_ALL.upload(context, "anyone")
    authz.ALLOW_ALL.admin(context, "Promote")
    authz.ALLOW_ALL.read(context)
    assert context.calls == 0  # TLS off: nothing is looked at, everything allowed
    strict = authz.Authorizer(enforce=True)
    strict.upload(_Context(ROBOT0), "robot0")
    strict.admin(_Context(ADMIN), "Rollback")
    with pytest.raises(PermissionDenied):
        strict.upload(_Context(ROBOT0), "robot1")
    with pytest.raises(PermissionDenied):
        strict.admin(_Context(ROBOT0), "Promote")
    with pytest.raises(PermissionDenied):
        strict.read(_Context({}))
