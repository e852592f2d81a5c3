"""The load generator: processes of concurrent workers that run a workload over HTTP and record
every operation for the history.

Why it is built this way: one Python process sending one HTTP request per operation tops out
near 1,500 requests/s, and one `httpx.AsyncClient` shared by many concurrent requests collapses
(its pool's bookkeeping, encode/httpx#3215). So the load is spread over several OS processes,
each worker owns its own `RaftbenchClient` (and, for local reads, its own small httpx client),
and `batch` > 1 sends that many operations per `POST /batch` request, so that the cluster, not
the generator, saturates first.

One generator process (``python -m workloads.loadgen PLAN.json``):

1. reads its `GeneratorPlan`, builds each worker's `OperationStream` and (open loop) its
   arrival schedule, prints ``ready`` and waits for ``go <origin>`` on stdin;
2. runs its workers until the plan's `stop_at`: a closed-loop worker starts its next round when
   the previous one completes; an open-loop worker starts an operation at its scheduled time, or
   as soon as it is free if it is late (the latency then counts from the schedule, so queueing
   in the client is not hidden);
3. waits for what is outstanding, writes its operations (JSON lines of `OpRecord`) to the plan's
   `output` file and prints one JSON line: its CPU time, counts and errors.

Time: every process reads CLOCK_MONOTONIC, which on Linux is one clock for the whole machine;
`origin` is its value at run time 0, so all processes (and the coordinator) agree on operation
times without any clock offset to estimate. The linearizability checker depends on that.

History rules (DESIGN.md): each of a worker's `batch` lanes is one Jepsen process (at most one
operation outstanding); a write whose outcome is unknown is recorded `unknown` and its lane goes
on as a new process number (`lane * PROCESS_SPAN + generation`, unique across all generator
processes). A read that gets no answer took no effect: it is recorded `fail`. A
read-modify-write is a read, then a compare-and-set from the value read (two operations).

etcd (`GeneratorPlan.target` "etcd"): each worker speaks etcd's v3 JSON gateway through
`cluster.etcd_client.EtcdClient`, with the same op streams and timing rules. A round of `batch`
operations goes as one request where the semantics allow it, as raftbench's `/batch` does: its
writes, deletes and linearizable reads on distinct keys (`txn_lanes`) share one unconditional
txn, each answered as if it ran alone at the txn's point (the txn only adds atomicity, which the
per-operation history does not need; its operations share one outcome when it fails). A cas
(its own compare), a local read (serializable) or a second operation on a key in the round goes
as its own request on its lane's connection, at the same time. Without this the Python client,
sending `batch` times more requests than for raftbench, set etcd's pace.

`GeneratorPool` is the coordinator's side: it spawns the processes, releases them together and
collects their records.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import select
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import anyio
import httpx

from cluster.client import (
    Cas,
    ClientError,
    Delete,
    Get,
    OutcomeUnknown,
    Put,
    RaftbenchClient,
    ReadResult,
    Unavailable,
    WriteResult,
    normalise_endpoint,
)
from cluster.etcd_client import EtcdClient
from cluster.procfs import cpu_seconds
from protocols.engine import Consistency
from workloads.generators import PROCESS_SPAN, LoopMode, OperationStream, OpKind, Workload
from workloads.results import OpRecord

READY = "ready"
GO = "go"
LOCAL = "local"
ETCD = "etcd"  # GeneratorPlan.target of an etcd cluster


def monotonic() -> float:
    """The machine-wide clock every generator process and the coordinator share."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class GeneratorError(Exception):
    """A generator process could not start, or failed; the message carries its stderr tail."""


@dataclass(frozen=True, slots=True)
class GeneratorPlan:
    """What one generator process does. Times are run seconds (0 = the `go` origin)."""

    endpoints: tuple[str, ...]
    workload: dict[str, Any]  # Workload.to_dict()
    seed: int
    workers: tuple[int, ...]  # global worker ids: the op streams' client ids
    batch: int
    stop_at: float  # no new operation starts after this (open loop: see `drain`)
    output: str  # where the operations go (JSON lines)
    op_timeout: float = 10.0  # a client gives up on an operation after this long
    attempt_timeout: float = 5.0
    drain: float = 0.0  # open loop: a backlog may still be sent until stop_at + drain
    target: str = "raftbench"  # raftbench | etcd: which client speaks to the endpoints
    # Prefix of the workers' client ids (their exactly-once sessions): loads run one after
    # another against the same cluster need distinct ones, or a worker's seq 1 is taken for a
    # stale duplicate of the previous load's worker with the same id.
    client_prefix: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> GeneratorPlan:
        raw = json.loads(text)
        raw["endpoints"] = tuple(raw["endpoints"])
        raw["workers"] = tuple(raw["workers"])
        return cls(**raw)


@dataclass(slots=True)
class GeneratorReport:
    """What one generator process says about itself when it is done."""

    pid: int
    cpu_seconds: float  # its whole life (imports included)
    operations: int
    requests: int  # HTTP requests that carried operations (first attempts)
    not_sent: int  # open loop: scheduled operations dropped at stop_at + drain
    errors: dict[str, int] = field(default_factory=dict)  # client errors by type


# ---- one generator process ------------------------------------------------------------------


@dataclass(slots=True)
class _Op:
    """One operation of a round (an rmw is its read here; its cas follows as another _Op)."""

    f: str  # read | write | cas | delete
    key: str
    value: str | None = None  # write: the value; cas: the new value
    expected: str | None = None  # cas
    consistency: str | None = None  # read
    intended: float | None = None  # open loop: the scheduled start
    then_cas: str | None = None  # rmw: after the read, cas(value read -> then_cas)


class _LocalReader:
    """Local reads, spread over every node (any node may answer them).

    The worker's own httpx client: never shared with another worker.
    """

    def __init__(
        self, endpoints: Sequence[str], rng: random.Random, timeout: float, attempt: float
    ) -> None:
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        self.rng = rng
        self.timeout = timeout
        self.http = httpx.AsyncClient(
            trust_env=False,
            timeout=attempt,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
        )

    async def read(self, keys: Sequence[str], batch: bool) -> list[ReadResult | ClientError]:
        """Read `keys` locally; one GET for a single key unless `batch`, else one POST /batch."""
        results: list[ReadResult | ClientError | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        deadline = time.monotonic() + self.timeout
        pause = 0.02
        detail = "no attempt finished"
        while pending and time.monotonic() < deadline:
            target = self.rng.choice(self.endpoints)
            try:
                answers = await self._ask(target, [keys[i] for i in pending], batch)
            except (httpx.HTTPError, ValueError) as error:
                answers = None
                detail = f"{target}: {type(error).__name__}"
            still = []
            for position, i in enumerate(pending):
                answer = answers[position] if answers is not None else None
                if answer is not None and answer.get("status", 200) == 200:
                    results[i] = ReadResult(answer.get("value"), int(answer.get("index", 0)))
                else:
                    still.append(i)
                    if answer is not None:
                        detail = f"{target}: {answer.get('status')} {answer.get('error')}"
            pending = still
            if pending:
                await anyio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(0.5, pause * 2)
        for i in pending:
            results[i] = Unavailable(f"local read {keys[i]!r}: {detail}")
        return [r for r in results if r is not None]

    async def _ask(self, target: str, keys: list[str], batch: bool) -> list[dict[str, Any]]:
        if len(keys) == 1 and not batch:
            url = f"{target}/kv/{quote(keys[0], safe='')}?consistency={LOCAL}"
            response = await self.http.get(url)
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("answer is not an object")
            return [{**body, "status": response.status_code}]
        ops = [{"op": "get", "key": k, "consistency": LOCAL} for k in keys]
        response = await self.http.post(f"{target}/batch", json={"ops": ops})
        body = response.json()
        answers = body.get("results") if isinstance(body, dict) else None
        if response.status_code != 200 or not isinstance(answers, list):
            raise ValueError(f"batch answered {response.status_code}")
        if len(answers) != len(keys):
            raise ValueError("batch answer does not match")
        return [a if isinstance(a, dict) else {"status": 0} for a in answers]

    async def aclose(self) -> None:
        await self.http.aclose()


class Worker:
    """One concurrent client of a generator process: its stream, its lanes, its own clients."""

    def __init__(
        self, plan: GeneratorPlan, workload: Workload, worker_id: int, origin: float
    ) -> None:
        self.plan = plan
        self.worker_id = worker_id
        self.origin = origin
        self.batch = plan.batch
        self.stream = OperationStream(workload, plan.seed, worker_id)
        self.open_loop = workload.loop is LoopMode.OPEN
        self.arrivals: list[float] = (
            [float(t) for t in workload.arrivals(plan.stop_at, plan.seed, worker_id)]
            if self.open_loop
            else []
        )
        self._next_arrival = 0
        self.generations = [0] * self.batch
        self.followups: deque[_Op] = deque()
        self.ops: list[OpRecord] = []
        self.errors: Counter[str] = Counter()
        self.requests = 0
        self.not_sent = 0
        # Clients are made here, before the start signal (each costs milliseconds to build).
        self.client: RaftbenchClient | EtcdClient
        self.local: _LocalReader | None = None
        if plan.target == ETCD:  # local reads are etcd's serializable ranges, on this client
            self.client = EtcdClient(
                plan.endpoints,
                lanes=plan.batch,
                timeout=plan.op_timeout,
                attempt_timeout=plan.attempt_timeout,
            )
            return
        self.client = RaftbenchClient(
            plan.endpoints,
            client_id=f"{plan.client_prefix}w{worker_id}",
            timeout=plan.op_timeout,
            attempt_timeout=plan.attempt_timeout,
        )
        if workload.mix.consistency_probabilities().get(Consistency.LOCAL, 0.0) > 0:
            rng = random.Random(plan.seed * 1_000_003 + worker_id)
            self.local = _LocalReader(plan.endpoints, rng, plan.op_timeout, plan.attempt_timeout)

    def now(self) -> float:
        return monotonic() - self.origin

    def process(self, lane: int) -> int:
        return (self.worker_id * self.batch + lane) * PROCESS_SPAN + self.generations[lane]

    async def run(self) -> None:
        try:
            while True:
                now = self.now()
                ops = self._next_round(now)
                if ops is None:
                    return
                if not ops:
                    await anyio.sleep(max(0.0, self.arrivals[self._next_arrival] - self.now()))
                    continue
                await self._execute(ops)
        finally:
            await self.client.aclose()
            if self.local is not None:
                await self.local.aclose()

    def _next_round(self, now: float) -> list[_Op] | None:
        """The operations of the next request ([]: wait for an arrival; None: done)."""
        ops: list[_Op] = []
        while self.followups and len(ops) < self.batch:
            ops.append(self.followups.popleft())
        if not self.open_loop:
            while len(ops) < self.batch and now < self.plan.stop_at:
                ops.append(self._new(None))
            return ops or None
        arrivals = self.arrivals
        if self._next_arrival < len(arrivals) and now >= self.plan.stop_at + self.plan.drain:
            self.not_sent += len(arrivals) - self._next_arrival  # the backlog is abandoned
            self._next_arrival = len(arrivals)
        while (
            len(ops) < self.batch
            and self._next_arrival < len(arrivals)
            and arrivals[self._next_arrival] <= now
        ):
            ops.append(self._new(arrivals[self._next_arrival]))
            self._next_arrival += 1
        if ops:
            return ops
        return [] if self._next_arrival < len(arrivals) else None

    def _new(self, intended: float | None) -> _Op:
        planned = self.stream.next_op()
        level = planned.consistency.value if planned.consistency is not None else None
        match planned.kind:
            case OpKind.READ:
                return _Op("read", planned.key, consistency=level, intended=intended)
            case OpKind.RMW:
                return _Op(
                    "read", planned.key, consistency=level, intended=intended,
                    then_cas=planned.value,
                )  # fmt: skip
            case OpKind.WRITE:
                return _Op("write", planned.key, planned.value, intended=intended)
            case OpKind.DELETE:
                return _Op("delete", planned.key, intended=intended)
            case OpKind.CAS:
                return _Op("cas", planned.key, planned.value, planned.expected, intended=intended)

    async def _execute(self, ops: list[_Op]) -> None:
        """One round: every op on its own lane, sent together; each recorded with the times
        of the request that carried it."""
        local = [i for i, op in enumerate(ops) if op.consistency == LOCAL]
        rest = [i for i, op in enumerate(ops) if op.consistency != LOCAL]
        if isinstance(self.client, EtcdClient) and self.batch > 1:
            together = txn_lanes(ops)
            if len(together) < 2:
                together = []
            async with anyio.create_task_group() as group:
                if together:
                    group.start_soon(self._send_txn, self.client, ops, together)
                for lane in range(len(ops)):
                    if lane not in together:
                        group.start_soon(self._send_lane, self.client, ops[lane], lane)
            return
        if self.batch == 1:
            op = ops[0]
            invoke = self.now()
            self.requests += 1
            result: Any
            try:
                if local and self.local is not None:
                    (result,) = await self.local.read([op.key], batch=False)
                else:
                    result = await self._single(op)
            except ClientError as error:
                result = error
            self._settle(op, 0, result, invoke, self.now())
            return
        async with anyio.create_task_group() as group:
            if rest:
                group.start_soon(self._send_batch, ops, rest)
            if local:
                group.start_soon(self._send_local, ops, local)

    async def _single(self, op: _Op) -> WriteResult | ReadResult:
        client = self.client
        match op.f:
            case "read":
                return await client.get(op.key, op.consistency or "linearizable")
            case "write":
                assert op.value is not None
                return await client.put(op.key, op.value)
            case "delete":
                return await client.delete(op.key)
            case _:
                assert op.value is not None
                return await client.cas(op.key, op.expected, op.value)

    async def _send_batch(self, ops: list[_Op], lanes: list[int]) -> None:
        requests = [_batch_op(ops[i]) for i in lanes]
        invoke = self.now()
        self.requests += 1
        answers: Sequence[Any]
        try:
            answers = await self.client.batch(requests)
        except ClientError as error:
            answers = [error] * len(lanes)
        complete = self.now()
        for lane, answer in zip(lanes, answers, strict=True):
            self._settle(ops[lane], lane, answer, invoke, complete)

    async def _send_lane(self, client: EtcdClient, op: _Op, lane: int) -> None:
        """etcd: one lane's operation as its own request, timed on its own."""
        invoke = self.now()
        self.requests += 1
        answer = await client.run(_batch_op(op), lane)
        self._settle(op, lane, answer, invoke, self.now())

    async def _send_txn(self, client: EtcdClient, ops: list[_Op], lanes: list[int]) -> None:
        """etcd: the round's txn-able operations in one txn, timed together (as a /batch)."""
        invoke = self.now()
        self.requests += 1
        answers = await client.txn([_txn_op(ops[i]) for i in lanes], lanes[0])
        complete = self.now()
        for lane, answer in zip(lanes, answers, strict=True):
            self._settle(ops[lane], lane, answer, invoke, complete)

    async def _send_local(self, ops: list[_Op], lanes: list[int]) -> None:
        assert self.local is not None
        invoke = self.now()
        self.requests += 1
        answers = await self.local.read([ops[i].key for i in lanes], batch=True)
        complete = self.now()
        for lane, answer in zip(lanes, answers, strict=True):
            self._settle(ops[lane], lane, answer, invoke, complete)

    def _settle(self, op: _Op, lane: int, result: object, invoke: float, complete: float) -> None:
        """Record one operation's outcome and tell the stream what it learned."""
        process = self.process(lane)
        intended = op.intended if op.intended is not None else invoke
        if isinstance(result, ClientError):
            self.errors[type(result).__name__] += 1
        if op.f == "read":
            if isinstance(result, ReadResult):
                self._record(process, op, result.value, intended, invoke, complete, "ok")
                self.stream.observe(op.key, result.value)
                if op.then_cas is not None:
                    self.followups.append(
                        _Op("cas", op.key, op.then_cas, result.value, intended=complete)
                    )
            else:  # no answer: a read takes no effect
                self._record(process, op, None, intended, invoke, complete, "fail")
            return
        value: Any = (op.expected, op.value) if op.f == "cas" else op.value
        if isinstance(result, WriteResult) and (result.ok or not result.duplicate):
            if result.ok:
                self._record(process, op, value, intended, invoke, complete, "ok")
            else:  # a cas whose expectation did not hold: nothing changed; prev is current
                self._record(process, op, value, intended, invoke, complete, "fail")
                self.stream.observe(op.key, result.prev)
        elif isinstance(result, ClientError) and not isinstance(result, OutcomeUnknown):
            # NotLeader, Unavailable, Timeout, BadRequest: the client knows nothing was applied.
            self._record(process, op, value, intended, invoke, complete, "fail")
        else:  # unknown outcome (or a write refused as a stale duplicate): a new process
            self._record(process, op, value, intended, invoke, None, "unknown")
            self.generations[lane] += 1

    def _record(
        self,
        process: int,
        op: _Op,
        value: Any,
        intended: float,
        invoke: float,
        complete: float | None,
        outcome: str,
    ) -> None:
        self.ops.append(
            OpRecord(
                process, op.f, op.key, value, invoke, complete, outcome, op.consistency, intended
            )
        )


def _batch_op(op: _Op) -> Get | Put | Delete | Cas:
    match op.f:
        case "read":
            return Get(op.key, op.consistency or "linearizable")
        case "write":
            assert op.value is not None
            return Put(op.key, op.value)
        case "delete":
            return Delete(op.key)
        case _:
            assert op.value is not None
            return Cas(op.key, op.expected, op.value)


def txn_lanes(ops: Sequence[_Op]) -> list[int]:
    """Lanes whose operations can share one etcd txn: writes, deletes and linearizable reads,
    the first of each key (a txn takes a key once; a cas needs its own compare, and a txn's
    reads are never serializable)."""
    lanes: list[int] = []
    keys: set[str] = set()
    for lane, op in enumerate(ops):
        if op.key in keys or op.f == "cas" or (op.f == "read" and op.consistency == LOCAL):
            continue
        keys.add(op.key)
        lanes.append(lane)
    return lanes


def _txn_op(op: _Op) -> Get | Put | Delete:
    planned = _batch_op(op)
    assert not isinstance(planned, Cas)
    return planned


async def run_workers(workers: Sequence[Worker]) -> None:
    async with anyio.create_task_group() as group:
        for worker in workers:
            group.start_soon(worker.run)


def op_to_json(op: OpRecord) -> str:
    row = asdict(op)
    for name in ("invoke", "complete", "intended"):
        if row[name] is not None:
            row[name] = round(row[name], 6)
    if isinstance(row["value"], tuple):
        row["value"] = list(row["value"])
    return json.dumps(row, separators=(",", ":"))


def op_from_json(line: str) -> OpRecord:
    op = OpRecord(**json.loads(line))
    if op.f == "cas" and isinstance(op.value, list):
        op.value = tuple(op.value)
    return op


def generator_main(plan_path: Path, stdin: IO[str], stdout: IO[str]) -> int:
    """The body of one generator process (see the module docstring)."""
    plan = GeneratorPlan.from_json(plan_path.read_text(encoding="utf-8"))
    workload = Workload.from_dict(plan.workload)
    # Build everything that costs time (numpy streams, schedules) before the start signal.
    pending = [Worker(plan, workload, worker_id, 0.0) for worker_id in plan.workers]
    print(READY, file=stdout, flush=True)
    line = stdin.readline().split()
    if len(line) != 2 or line[0] != GO:
        print(f"loadgen: expected '{GO} <origin>', got {line!r}", file=sys.stderr)
        return 2
    origin = float(line[1])
    for worker in pending:
        worker.origin = origin
    anyio.run(run_workers, pending)
    errors: Counter[str] = Counter()
    count = 0
    with open(plan.output, "w", encoding="utf-8") as out:
        for worker in pending:
            errors.update(worker.errors)
            for op in worker.ops:
                out.write(op_to_json(op) + "\n")
                count += 1
    report = GeneratorReport(
        pid=os.getpid(),
        cpu_seconds=time.process_time(),
        operations=count,
        requests=sum(w.requests for w in pending),
        not_sent=sum(w.not_sent for w in pending),
        errors=dict(errors),
    )
    print(json.dumps(asdict(report)), file=stdout, flush=True)
    return 0


# ---- the coordinator's side --------------------------------------------------------------------


def split_workers(clients: int, processes: int) -> list[tuple[int, ...]]:
    """Global worker ids 0..clients-1 dealt over at most `processes` processes, evenly."""
    processes = max(1, min(processes, clients))
    return [tuple(range(p, clients, processes)) for p in range(processes)]


@dataclass(slots=True)
class GeneratorResult:
    report: GeneratorReport
    ops: list[OpRecord]


class GeneratorPool:
    """Generator processes of one run: spawn, release together, measure, collect.

    Use as a context manager: leaving it kills any generator still running (only processes
    this pool started, by their own handles).
    """

    def __init__(self, plans: Sequence[GeneratorPlan], directory: Path) -> None:
        self.plans = list(plans)
        self.directory = directory
        self.processes: list[subprocess.Popen[str]] = []
        self._last_cpu: dict[int, float] = {}

    def __enter__(self) -> GeneratorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def start(self, timeout: float = 60.0) -> None:
        """Spawn every process and wait until each has printed `ready`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        for index, plan in enumerate(self.plans):
            plan_path = self.directory / f"loadgen-{index}.json"
            plan_path.write_text(plan.to_json(), encoding="utf-8")
            with open(self._stderr_path(index), "w", encoding="utf-8") as err:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "workloads.loadgen", str(plan_path)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        text=True,
                        env=env,
                    )
                )
        deadline = time.monotonic() + timeout
        for index, process in enumerate(self.processes):
            line = self._read_line(index, process, deadline)
            if line.strip() != READY:
                raise GeneratorError(
                    f"load generator {index} said {line.strip()!r} instead of {READY!r}"
                    + self._stderr_tail(index)
                )

    def go(self, origin: float) -> None:
        """Release every process; `origin` is run time 0 on the shared monotonic clock."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{GO} {origin!r}\n")
            process.stdin.close()
            process.stdin = None  # communicate() must not touch it again

    def cpu_seconds(self) -> float:
        """CPU used so far by the generator processes (the last reading for exited ones)."""
        total = 0.0
        for process in self.processes:
            now = cpu_seconds(process.pid) if process.returncode is None else None
            if now is not None:
                self._last_cpu[process.pid] = now
            total += self._last_cpu.get(process.pid, 0.0)
        return total

    def finish(self, timeout: float) -> list[GeneratorResult]:
        """Wait for every process to exit; their reports and operations."""
        deadline = time.monotonic() + timeout
        results = []
        for index, process in enumerate(self.processes):
            self.cpu_seconds()
            try:
                out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise GeneratorError(
                    f"load generator {index} did not finish in {timeout:g} s"
                    + self._stderr_tail(index)
                ) from None
            lines = [line for line in out.splitlines() if line.strip()]
            if process.returncode != 0 or not lines:
                raise GeneratorError(
                    f"load generator {index} failed (exit {process.returncode})"
                    + self._stderr_tail(index)
                )
            report = GeneratorReport(**json.loads(lines[-1]))
            with open(self.plans[index].output, encoding="utf-8") as source:
                ops = [op_from_json(line) for line in source if line.strip()]
            results.append(GeneratorResult(report, ops))
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5.0)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()

    def _read_line(self, index: int, process: subprocess.Popen[str], deadline: float) -> str:
        assert process.stdout is not None
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
        if not ready:
            raise GeneratorError(f"load generator {index} not ready" + self._stderr_tail(index))
        return process.stdout.readline()

    def _stderr_path(self, index: int) -> Path:
        return self.directory / f"loadgen-{index}.err"

    def _stderr_tail(self, index: int) -> str:
        try:
            lines = self._stderr_path(index).read_text(encoding="utf-8").splitlines()
        except OSError:
            return ""
        tail = [line for line in lines if line.strip()][-15:]
        return ("; its stderr ends with:\n  " + "\n  ".join(tail)) if tail else ""


def merge_ops(results: Sequence[GeneratorResult]) -> list[OpRecord]:
    """Every process's operations, in invocation order."""
    ops = [op for result in results for op in result.ops]
    ops.sort(key=lambda op: (op.invoke, op.process))
    return ops


def percentile_ms(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of latencies (seconds) in milliseconds; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return 1000.0 * ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def iter_window(ops: Sequence[OpRecord], start: float, end: float) -> Iterator[OpRecord]:
    """Ok operations that completed inside [start, end)."""
    for op in ops:
        if op.outcome == "ok" and op.complete is not None and start <= op.complete < end:
            yield op


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m workloads.loadgen PLAN.json", file=sys.stderr)
        return 2
    return generator_main(Path(args[0]), sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
