"""Producers in Python (psycopg 3) adding tasks through sluice's SQL API (docs/producers.md).

Run by ctest (tests/CMakeLists.txt) as `python3 -m unittest` with SLUICE_BIN set to the build's
`sluice`. The database comes from DATABASE_URL or the PG* variables, as for the other
integration tests. Each run migrates a schema of its own with `sluice migrate --schema` and drops
it afterwards.
"""

import os
import subprocess
import threading
import unittest
import uuid

import psycopg

CONNINFO = os.environ.get("DATABASE_URL", "")
SLUICE = os.environ.get("SLUICE_BIN", "sluice")


def connect(**kwargs):
    return psycopg.connect(CONNINFO, application_name="sluice-python-producers", **kwargs)


class Producers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.schema = "sluice_py_" + uuid.uuid4().hex[:12]
        args = [SLUICE, "migrate", "--schema", cls.schema]
        if CONNINFO:
            args += ["--database-url", CONNINFO]
        subprocess.run(args, check=True, capture_output=True, text=True)
        cls.admin = connect(autocommit=True)

    @classmethod
    def tearDownClass(cls):
        cls.admin.execute(f'DROP SCHEMA IF EXISTS "{cls.schema}" CASCADE')
        cls.admin.close()

    def setUp(self):
        self.admin.execute(f'TRUNCATE "{self.schema}".tasks')

    def fn(self, name):
        return f'"{self.schema}".{name}'

    def count(self, where="true", params=()):
        return self.admin.execute(
            f'SELECT count(*) FROM "{self.schema}".tasks WHERE {where}', params
        ).fetchone()[0]

    def test_commit_makes_the_task_exist(self):
        with connect() as conn:  # the block commits on success
            with conn.transaction():
                (task_id,) = conn.execute(
                    f"SELECT {self.fn('add_task')}(%s, %s::jsonb, priority => %s)",
                    ("email.send", '{"to": "ada@example.com"}', 5),
                ).fetchone()
                self.assertEqual(self.count(), 0, "visible before COMMIT")
            self.assertEqual(
                conn.execute(f"SELECT {self.fn('task_state')}(%s)", (task_id,)).fetchone()[0],
                "scheduled",
            )
        self.assertEqual(self.count("id = %s AND priority = 5", (task_id,)), 1)

    def test_rollback_leaves_nothing(self):
        with connect() as conn:
            try:
                with conn.transaction():
                    conn.execute(f"SELECT {self.fn('add_task')}('email.send')")
                    raise RuntimeError("the order failed")
            except RuntimeError:
                pass
        self.assertEqual(self.count(), 0)

    def test_validation_error_has_the_api_message_and_sqlstate(self):
        with connect() as conn:
            with self.assertRaises(psycopg.errors.InvalidParameterValue) as caught:
                conn.execute(f"SELECT {self.fn('add_task')}('x', priority => 5000)")
            self.assertEqual(caught.exception.sqlstate, "22023")
            self.assertEqual(
                caught.exception.diag.message_primary, "priority: must be between -1000 and 1000"
            )

    def test_a_thousand_in_one_bulk_call(self):
        tasks = [{"type": "bulk", "payload": {"n": i}} for i in range(1000)]
        with connect() as conn:
            (ids,) = conn.execute(
                f"SELECT {self.fn('add_tasks')}(%s)", (psycopg.types.json.Jsonb(tasks),)
            ).fetchone()
        self.assertEqual(len(ids), 1000)
        self.assertEqual(len(set(ids)), 1000)
        self.assertEqual(self.count("type = 'bulk'"), 1000)

    def test_racing_producers_on_one_key_create_one_task(self):
        producers = 16
        barrier = threading.Barrier(producers)
        ids, errors = [], []
        lock = threading.Lock()

        def produce():
            try:
                with connect() as conn:
                    with conn.transaction():
                        barrier.wait()
                        (task_id,) = conn.execute(
                            f"SELECT {self.fn('add_task')}('race', unique_key => %s)",
                            ("order:42",),
                        ).fetchone()
                with lock:
                    ids.append(task_id)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=produce) for _ in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(ids), producers)
        self.assertEqual(len(set(ids)), 1)
        self.assertEqual(self.count("unique_key = 'order:42'"), 1)


if __name__ == "__main__":
    unittest.main()
