"""nestor_core.transaction.immediate_transaction: commit, rollback, and the in_transaction guard."""

import sqlite3

import pytest
from nestor_core.transaction import immediate_transaction


@pytest.fixture
def conn(tmp_path):
    db = sqlite3.connect(tmp_path / "t.sqlite", isolation_level=None)
    db.execute("CREATE TABLE t (x INTEGER)")
    yield db
    db.close()


def test_commits_on_return_and_rolls_back_on_error(conn):
    with immediate_transaction(conn) as c:
        c.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(KeyError), immediate_transaction(conn):
        conn.execute("INSERT INTO t VALUES (2)")
        raise KeyError("boom")
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    assert not conn.in_transaction


def test_the_real_error_survives_a_rollback_the_database_did_itself(conn):
    # As SQLite after SQLITE_FULL: the transaction is gone before the block's error reaches us.
    with pytest.raises(KeyError, match="disk full"), immediate_transaction(conn):
        conn.execute("INSERT INTO t VALUES (3)")
        conn.execute("ROLLBACK")
        raise KeyError("disk full")
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
