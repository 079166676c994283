"""Producers in Python (psycopg 3) adding tasks through sluice's SQL API (docs/producers.md).

Run by ctest (tests/CMakeLists.txt) as `python3 -m unittest` with SLUICE_BIN set to the build's
`sluice`. The database comes from DATABASE_URL or the PG* variables, as for the other
integration tests. Each test class migrates a schema of its own with `sluice migrate --schema`
and drops it afterwards. `Producers` checks what the SQL API writes; `ProducersOnALiveServe`
starts `sluice serve` on its schema and sees the tasks run.
"""

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request
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


def wait_for(condition, timeout_s, what):
    """Polls `condition` until it returns a true value (returned) or `timeout_s` passes (fails).

    For states no signal announces: the engine writes a task's outcome to its row, and the test
    reads it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.05)


class ProducersOnALiveServe(unittest.TestCase):
    """Tasks added from Python run on a real `sluice serve` (the built-in noop handler)."""

    TOKEN = "python-producers-token-0123456789"

    @classmethod
    def setUpClass(cls):
        cls.schema = "sluice_pyserve_" + uuid.uuid4().hex[:12]
        cls.dir = tempfile.mkdtemp(prefix="sluice-py-serve.")
        config = os.path.join(cls.dir, "sluice.toml")
        cls.port_file = os.path.join(cls.dir, "port")
        with open(config, "w", encoding="utf-8") as f:
            f.write(
                "[scheduler]\n"
                f'schema = "{cls.schema}"\n'
                "workers = 4\n"
                'poll_interval = "100ms"\n'
                'idle_poll_max = "300ms"\n'
                "[http]\n"
                'address = "127.0.0.1"\n'
                "port = 0\n"
                f'token = "{cls.TOKEN}"\n'
            )
        env = {k: v for k, v in os.environ.items()
               if k not in ("SLUICE_API_TOKEN", "SLUICE_HTTP_PORT") and not k.startswith("DB_POOL_")}
        cls.log = open(os.path.join(cls.dir, "serve.log"), "w+", encoding="utf-8")
        cls.serve = subprocess.Popen(
            [SLUICE, "serve", "--config", config, "--port-file", cls.port_file, "--migrate"],
            stdout=cls.log, stderr=subprocess.STDOUT, env=env,
        )
        cls.admin = connect(autocommit=True)
        try:
            port = wait_for(cls._port, 60, "sluice serve listening")
        except AssertionError:
            cls._stop()
            raise
        cls.base = f"http://127.0.0.1:{port}"

    @classmethod
    def _port(cls):
        if cls.serve.poll() is not None:
            cls.log.seek(0)
            raise AssertionError(f"sluice serve exited with {cls.serve.returncode}: {cls.log.read()}")
        try:
            with open(cls.port_file, encoding="utf-8") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return None
        return int(text) if text else None

    @classmethod
    def _stop(cls):
        if cls.serve.poll() is None:
            cls.serve.terminate()
            try:
                cls.serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.serve.kill()
                cls.serve.wait()
        cls.log.close()

    @classmethod
    def tearDownClass(cls):
        cls._stop()
        code = cls.serve.returncode
        cls.admin.execute(f'DROP SCHEMA IF EXISTS "{cls.schema}" CASCADE')
        cls.admin.close()
        shutil.rmtree(cls.dir, ignore_errors=True)
        if code != 0:
            raise AssertionError(f"sluice serve exited with {code} on SIGTERM")

    def fn(self, name):
        return f'"{self.schema}".{name}'

    def scalar(self, sql, params=()):
        return self.admin.execute(sql, params).fetchone()[0]

    def state(self, task_id):
        return self.scalar(f"SELECT {self.fn('task_state')}(%s)", (task_id,))

    def wait_succeeded(self, task_id):
        wait_for(lambda: self.state(task_id) == "succeeded", 60, f"task {task_id} succeeded")

    def runs_of(self, task_id):
        return self.scalar(
            f'SELECT count(*) FROM "{self.schema}".task_runs WHERE task_id = %s', (task_id,)
        )

    def test_commit_makes_the_task_run(self):
        with connect() as conn:
            with conn.transaction():
                (task_id,) = conn.execute(
                    f"SELECT {self.fn('add_task')}('noop', %s::jsonb)", ('{"order": 1}',)
                ).fetchone()
        self.wait_succeeded(task_id)
        self.assertEqual(self.runs_of(task_id), 1)

    def test_rollback_makes_none(self):
        marker = uuid.uuid4().hex
        with connect() as conn:
            try:
                with conn.transaction():
                    conn.execute(
                        f"SELECT {self.fn('add_task')}('noop', %s::jsonb)",
                        (json.dumps({"marker": marker}),),
                    )
                    raise RuntimeError("the order failed")
            except RuntimeError:
                pass
            # A task committed after the rolled-back one has run: had the first existed, the
            # node would have seen it by then.
            with conn.transaction():
                (fence,) = conn.execute(f"SELECT {self.fn('add_task')}('noop')").fetchone()
        self.wait_succeeded(fence)
        self.assertEqual(
            self.scalar(
                f'SELECT count(*) FROM "{self.schema}".tasks WHERE payload->>\'marker\' = %s',
                (marker,),
            ),
            0,
        )
        self.assertEqual(
            self.scalar(
                f'SELECT count(*) FROM "{self.schema}".task_runs r '
                f'LEFT JOIN "{self.schema}".tasks t ON t.id = r.task_id WHERE t.id IS NULL'
            ),
            0,
        )

    def test_a_thousand_tasks_in_one_bulk_call_each_run_once(self):
        batch = uuid.uuid4().hex
        tasks = [{"type": "noop", "payload": {"batch": batch, "n": i}} for i in range(1000)]
        with connect() as conn:
            with conn.transaction():
                (ids,) = conn.execute(
                    f"SELECT {self.fn('add_tasks')}(%s)", (psycopg.types.json.Jsonb(tasks),)
                ).fetchone()
        self.assertEqual(len(set(ids)), 1000)
        done = f"""SELECT count(*) FROM "{self.schema}".tasks
                   WHERE id = ANY(%s) AND state = 'succeeded'"""
        wait_for(lambda: self.scalar(done, (ids,)) == 1000, 120, "1,000 tasks succeeded")
        runs = self.admin.execute(
            f"""SELECT task_id, count(*) FROM "{self.schema}".task_runs
                WHERE task_id = ANY(%s) GROUP BY task_id""",
            (ids,),
        ).fetchall()
        self.assertEqual(len(runs), 1000)
        self.assertEqual({n for _, n in runs}, {1}, "every task ran exactly once")
        self.assertEqual(
            self.scalar(
                f'SELECT sum(runs)::int FROM "{self.schema}".tasks WHERE id = ANY(%s)', (ids,)
            ),
            1000,
        )

    def test_racing_producers_on_one_key_create_one_task_that_runs_once(self):
        producers = 16
        key = "order:" + uuid.uuid4().hex
        barrier = threading.Barrier(producers)
        ids, errors = [], []
        lock = threading.Lock()

        def produce(i):
            try:
                with connect() as conn:
                    with conn.transaction():
                        barrier.wait()
                        # Due in an hour: the key stays held while the producers race (a
                        # task that had run already would have freed it for a second one).
                        (task_id,) = conn.execute(
                            f"SELECT {self.fn('add_task')}('noop', %s::jsonb, unique_key => %s,"
                            " run_at => now() + interval '1 hour')",
                            (json.dumps({"producer": i}), key),
                        ).fetchone()
                with lock:
                    ids.append(task_id)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), 1)
        self.assertTrue(
            self.scalar(f"SELECT {self.fn('reschedule_task')}(%s, now())", (ids[0],))
        )
        self.wait_succeeded(ids[0])
        self.assertEqual(
            self.scalar(f'SELECT count(*) FROM "{self.schema}".tasks WHERE unique_key = %s', (key,)),
            1,
        )
        self.assertEqual(self.runs_of(ids[0]), 1)

    def post(self, path, body=None, idempotency_key=None):
        headers = {"Authorization": f"Bearer {self.TOKEN}", "Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode() if body is not None else b"",
            method="POST",
            headers=headers,
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())

    def test_the_http_api_with_an_idempotency_key_creates_one_task(self):
        key = "req-" + uuid.uuid4().hex
        later = {"kind": "once", "at": "2100-01-01T00:00:00Z"}  # live until run-now below
        status, first = self.post(
            "/api/v1/tasks", {"type": "noop", "payload": {"try": 1}, "schedule": later}, key
        )
        self.assertEqual(status, 201)
        self.assertEqual(first["unique_key"], key)
        status, again = self.post("/api/v1/tasks", {"type": "noop", "payload": {"try": 2}}, key)
        self.assertEqual(status, 200)
        self.assertEqual(again["id"], first["id"])
        self.assertEqual(again["payload"], {"try": 1})
        status, _ = self.post(f"/api/v1/tasks/{first['id']}/run-now")
        self.assertEqual(status, 200)
        self.wait_succeeded(first["id"])
        self.assertEqual(self.runs_of(first["id"]), 1)

if __name__ == "__main__":
    unittest.main()
