"""The bundled sales dataset: its schema, its deterministic generator, its file.

`generate_rows()` draws every row from one seeded `random.Random`, so the shipped
`data/sales.sqlite` can be rebuilt byte-for-byte in content (same rows, same
values) with `python -m agents.reference.dataset [--out PATH]`. A test checks
that regenerating gives the rows the shipped file holds.

The column list here is the Data agent's whitelist: no other name ever reaches SQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

TABLE: Final = "sales"
DEFAULT_SEED: Final = 20240601
DEFAULT_ROWS: Final = 4000
DEFAULT_PATH: Final = Path(__file__).parent / "data" / "sales.sqlite"
FIRST_DAY: Final = dt.date(2022, 1, 1)
LAST_DAY: Final = dt.date(2024, 12, 31)

ColumnType = Literal["INTEGER", "REAL", "TEXT"]

# Column name -> SQLite type, in table order.
COLUMNS: Final[dict[str, ColumnType]] = {
    "order_id": "INTEGER",
    "date": "TEXT",  # ISO day, 2024-03-17
    "year": "INTEGER",
    "quarter": "TEXT",  # Q1..Q4
    "month": "TEXT",  # ISO year-month, 2024-03
    "region": "TEXT",
    "country": "TEXT",
    "product": "TEXT",
    "category": "TEXT",
    "channel": "TEXT",
    "units": "INTEGER",
    "revenue": "REAL",
    "cost": "REAL",
    "profit": "REAL",
}
# Columns a metric may be summed/averaged over; order_id is only ever counted.
MEASURES: Final = frozenset({"units", "revenue", "cost", "profit"})
DIMENSIONS: Final = frozenset(COLUMNS) - MEASURES - {"order_id"}
# Dimensions that are points in time (charts draw them left to right).
TIME_DIMENSIONS: Final = frozenset({"date", "month", "quarter", "year"})

REGIONS: Final[dict[str, tuple[str, ...]]] = {
    "North America": ("United States", "Canada"),
    "Europe": ("Germany", "France", "United Kingdom", "Spain", "Italy"),
    "Asia Pacific": ("Japan", "China", "India", "Australia", "Singapore"),
    "Latin America": ("Brazil", "Mexico", "Argentina", "Chile"),
}
_REGION_WEIGHTS: Final = (0.34, 0.30, 0.24, 0.12)


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    category: str
    unit_price: float
    max_units: int
    weight: float


PRODUCTS: Final[tuple[Product, ...]] = (
    Product("Laptop", "Electronics", 1150.0, 4, 1.2),
    Product("Smartphone", "Electronics", 780.0, 5, 1.5),
    Product("Tablet", "Electronics", 480.0, 5, 1.0),
    Product("Monitor", "Electronics", 260.0, 6, 1.0),
    Product("Desk", "Furniture", 340.0, 3, 0.6),
    Product("Office Chair", "Furniture", 210.0, 6, 0.8),
    Product("Bookshelf", "Furniture", 150.0, 3, 0.5),
    Product("Filing Cabinet", "Furniture", 190.0, 2, 0.4),
    Product("Printer Paper", "Office Supplies", 9.5, 50, 1.4),
    Product("Pens", "Office Supplies", 4.0, 60, 1.2),
    Product("Stapler", "Office Supplies", 14.0, 12, 0.7),
    Product("Notepad", "Office Supplies", 3.5, 40, 0.9),
    Product("Headphones", "Accessories", 120.0, 6, 1.0),
    Product("Keyboard", "Accessories", 65.0, 8, 0.9),
    Product("Mouse", "Accessories", 30.0, 10, 1.0),
    Product("Webcam", "Accessories", 85.0, 5, 0.6),
)
CATEGORIES: Final = tuple(dict.fromkeys(p.category for p in PRODUCTS))
CHANNELS: Final = ("Online", "Retail", "Partner")
_CHANNEL_WEIGHTS: Final = (0.5, 0.3, 0.2)
# Cost as a share of revenue, so profit differs by category.
_COST_RATIO: Final = {
    "Electronics": 0.78,
    "Furniture": 0.62,
    "Office Supplies": 0.55,
    "Accessories": 0.48,
}
_YEAR_GROWTH: Final = {2022: 1.0, 2023: 1.08, 2024: 1.17}
# Relative chance a sale lands in each month: a Q4 peak and a summer dip.
_MONTH_WEIGHT: Final = (0.8, 0.75, 0.9, 0.9, 0.95, 0.85, 0.7, 0.75, 0.95, 1.0, 1.15, 1.3)

Row = tuple[int, str, int, str, str, str, str, str, str, str, int, float, float, float]


def _draw_day(rng: random.Random) -> dt.date:
    span = (LAST_DAY - FIRST_DAY).days
    peak = max(_MONTH_WEIGHT)
    while True:  # rejection sampling keeps the draw a pure function of the rng
        day = FIRST_DAY + dt.timedelta(days=rng.randint(0, span))
        if rng.random() * peak <= _MONTH_WEIGHT[day.month - 1]:
            return day


def generate_rows(*, seed: int = DEFAULT_SEED, count: int = DEFAULT_ROWS) -> list[Row]:
    """The dataset's rows in `COLUMNS` order, sorted by date; same seed, same rows."""
    rng = random.Random(seed)
    regions = list(REGIONS)
    drawn: list[tuple[dt.date, Row]] = []
    for _ in range(count):
        day = _draw_day(rng)
        region = rng.choices(regions, weights=_REGION_WEIGHTS)[0]
        country = rng.choice(REGIONS[region])
        product = rng.choices(PRODUCTS, weights=[p.weight for p in PRODUCTS])[0]
        channel = rng.choices(CHANNELS, weights=_CHANNEL_WEIGHTS)[0]
        units = rng.randint(1, product.max_units)
        price = product.unit_price * _YEAR_GROWTH[day.year] * rng.uniform(0.85, 1.15)
        if channel == "Partner":  # partners buy at a discount
            price *= 0.9
        revenue = round(units * price, 2)
        cost = round(revenue * _COST_RATIO[product.category] * rng.uniform(0.9, 1.1), 2)
        profit = round(revenue - cost, 2)
        quarter = f"Q{(day.month - 1) // 3 + 1}"
        row: Row = (
            0,
            day.isoformat(),
            day.year,
            quarter,
            f"{day.year:04d}-{day.month:02d}",
            region,
            country,
            product.name,
            product.category,
            channel,
            units,
            revenue,
            cost,
            profit,
        )
        drawn.append((day, row))
    drawn.sort(key=lambda item: item[0])  # stable: same-day rows keep draw order
    return [(order_id, *row[1:]) for order_id, (_, row) in enumerate(drawn, start=1)]


def create_table_sql() -> str:
    columns = ", ".join(
        f'"{name}" {kind} PRIMARY KEY' if name == "order_id" else f'"{name}" {kind} NOT NULL'
        for name, kind in COLUMNS.items()
    )
    return f'CREATE TABLE "{TABLE}" ({columns})'


def build_database(path: Path, rows: Sequence[Row] | None = None) -> None:
    """Write the dataset to a fresh SQLite file at `path` (replacing any file there)."""
    rows = generate_rows() if rows is None else rows
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.execute(create_table_sql())
        placeholders = ", ".join("?" for _ in COLUMNS)
        conn.executemany(f'INSERT INTO "{TABLE}" VALUES ({placeholders})', rows)
        conn.commit()
        conn.execute("VACUUM")
    finally:
        conn.close()
    tmp.replace(path)  # readers never see a half-written file


def connect_readonly(path: Path = DEFAULT_PATH) -> sqlite3.Connection:
    """A read-only connection: even a crafted query cannot change the file."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset not found at {path}")
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def read_rows(path: Path = DEFAULT_PATH) -> Iterator[Row]:
    """Every row of the file at `path`, in order_id order."""
    conn = connect_readonly(path)
    try:
        names = ", ".join(f'"{name}"' for name in COLUMNS)
        yield from conn.execute(f'SELECT {names} FROM "{TABLE}" ORDER BY "order_id"')
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m agents.reference.dataset",
        description="Regenerate the reference Data agent's bundled sales dataset.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="SQLite file to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    args = parser.parse_args(argv)
    build_database(args.out, generate_rows(seed=args.seed, count=args.rows))
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()
