"""Benchmark peer (see dev/bench): the same 10 mixed columns as ferry's encode benchmark, as
google-cloud-bigquery hands them to Python (int, str, Decimal, float, bool, datetime, date),
written with the csv module to a buffered file. Prints `rows/s seconds`."""
import csv
import datetime as dt
import decimal
import io
import os
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
day = dt.date(2024, 1, 1)
rows = []
for i in range(1, n + 1):
    ts = base + dt.timedelta(seconds=i)
    rows.append((i, f"customer-{i}", decimal.Decimal(i) / 100, i * 1.5, i % 2 == 0, ts, ts, day,
                 None if i % 10 == 0 else 'category-a, "quoted"', i % 7))

t0 = time.perf_counter()
with open(os.devnull, "wb", buffering=0) as sink:
    f = io.TextIOWrapper(io.BufferedWriter(sink, 1 << 20), encoding="utf-8", newline="", write_through=False)
    w = csv.writer(f)
    w.writerow(["id", "name", "amount", "score", "active", "created_at", "updated_at", "day", "category", "qty"])
    w.writerows(rows)
    f.flush()
secs = time.perf_counter() - t0
print(f"{n / secs:.0f} {secs:.3f}")
