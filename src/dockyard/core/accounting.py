"""Accounting records and their export formats (table rows, CSV, SGE). Pure.

The SGE format is the Grid Engine ``accounting(5)`` file line that ``qacct``
reads: 45 colon-separated fields. dockyard fills them as follows; fields it has
no equivalent for are ``0`` (numbers) or ``NONE``/empty (text), as SGE writes them.

| # | SGE field | dockyard |
|---|---|---|
| 1 | qname | ``dockyard`` |
| 2 | hostname | node name |
| 3 | group | owner |
| 4 | owner | owner |
| 5 | job_name | job name |
| 6 | job_number | sequence number of the record |
| 7 | account | ``dockyard`` |
| 8 | priority | 0 |
| 9, 10, 11 | submission_time, start_time, end_time | epoch seconds (integers) |
| 12 | failed | 0 if the container ran and exited on its own, else 1 |
| 13 | exit_status | container exit code (0 when none) |
| 14 | ru_wallclock | wall seconds (start to end) |
| 15 | ru_utime | CPU seconds (user + system, from the cgroup) |
| 16 | ru_stime | 0 (included in ru_utime) |
| 17 | ru_maxrss | max memory in KiB |
| 18-31 | other rusage | 0 |
| 32 | project | task id |
| 33 | department | ``defaultdepartment`` |
| 34 | granted_pe | ``NONE`` |
| 35 | slots | CPU limit rounded up to whole cores |
| 36 | task_number | job array index (``DOCKYARD_ARRAY_INDEX``), else attempt |
| 37 | cpu | CPU seconds |
| 38 | mem | memory GiB-seconds |
| 39 | io | 0 |
| 40 | category | ``-l h_vmem=<memory limit>,reason=<reason>`` |
| 41 | iow | 0 |
| 42 | pe_taskid | ``NONE`` |
| 43 | maxvmem | max memory in bytes |
| 44 | arid | 0 |
| 45 | ar_submission_time | 0 |
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

SGE_FIELDS = (
    "qname hostname group owner job_name job_number account priority submission_time "
    "start_time end_time failed exit_status ru_wallclock ru_utime ru_stime ru_maxrss "
    "ru_ixrss ru_ismrss ru_idrss ru_isrss ru_minflt ru_majflt ru_nswap ru_inblock "
    "ru_oublock ru_msgsnd ru_msgrcv ru_nsignals ru_nvcsw ru_nivcsw project department "
    "granted_pe slots task_number cpu mem io category iow pe_taskid maxvmem arid "
    "ar_submission_time"
).split()


@dataclass(frozen=True, slots=True)
class AccountingRecord:
    """One finished task's resource use."""

    seq: int
    task_id: str
    workload_id: str
    job_name: str
    owner: str
    node: str
    image: str
    attempt: int
    state: str
    reason: str
    exit_code: int | None
    submitted_at: float
    started_at: float | None
    ended_at: float
    wall_s: float
    cpu_s: float
    max_memory_bytes: int
    memory_gib_s: float
    gpu_s: float
    cpu_limit: float
    memory_limit_bytes: int
    quota: Mapping[str, Any]
    #: The job array element it ran (SGE's task_number), if any.
    array_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["quota"] = dict(self.quota)
        return data


def _clean(text: str) -> str:
    """SGE fields cannot hold colons or newlines."""
    return text.replace(":", "_").replace("\n", " ") or "NONE"


def to_sge_line(record: AccountingRecord) -> str:
    failed = 0 if record.state in ("succeeded", "failed") and record.started_at else 1
    values: dict[str, Any] = dict.fromkeys(SGE_FIELDS, 0)
    values.update(
        qname="dockyard",
        hostname=_clean(record.node),
        group=_clean(record.owner),
        owner=_clean(record.owner),
        job_name=_clean(record.job_name),
        job_number=record.seq,
        account="dockyard",
        submission_time=int(record.submitted_at),
        start_time=int(record.started_at or 0),
        end_time=int(record.ended_at),
        failed=failed,
        exit_status=record.exit_code or 0,
        ru_wallclock=round(record.wall_s, 3),
        ru_utime=round(record.cpu_s, 3),
        ru_maxrss=record.max_memory_bytes // 1024,
        project=_clean(record.task_id),
        department="defaultdepartment",
        granted_pe="NONE",
        slots=max(1, math.ceil(record.cpu_limit)),
        task_number=record.attempt if record.array_index is None else record.array_index,
        cpu=round(record.cpu_s, 3),
        mem=round(record.memory_gib_s, 3),
        category=_clean(f"-l h_vmem={record.memory_limit_bytes},reason={record.reason}"),
        pe_taskid="NONE",
        maxvmem=record.max_memory_bytes,
    )
    return ":".join(str(values[name]) for name in SGE_FIELDS)


def parse_sge_line(line: str) -> dict[str, str]:
    """Split an accounting line into its named fields (as ``qacct`` would)."""
    parts = line.rstrip("\n").split(":")
    if len(parts) != len(SGE_FIELDS):
        raise ValueError(f"expected {len(SGE_FIELDS)} fields, got {len(parts)}")
    return dict(zip(SGE_FIELDS, parts, strict=True))


CSV_COLUMNS = [f.name for f in fields(AccountingRecord) if f.name != "quota"]


def to_csv(records: Iterable[AccountingRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for record in records:
        data = record.to_dict()
        writer.writerow(["" if data[c] is None else data[c] for c in CSV_COLUMNS])
    return out.getvalue()
