"""The NLP agent's rule-based parser: a question in, an `Intent` out.

Pure and deterministic (no I/O, no clock), so the orchestrator may reuse it as a
local fallback. Rules run in a fixed order over the tokens from
`lexicon.tokenize`, each marking the tokens it used so a later rule does not
read them again:

1. numeric filters   "orders over $1,000", "more than 10 units"
2. month filters     "March 2024" (a month name needs its year)
3. year filters      "in 2024", "2022 and 2023", "between 2022 and 2023", "since 2023"
4. value filters     regions, countries, categories, products, channels, quarters;
                     "excluding Europe" negates
5. group by          "by region and category", "per month", "monthly", "which region",
                     "top 5 products", "over time" (month), "Europe vs Asia" (region)
6. measure           aggregation (average, total, number of, ...) and metric
                     (revenue, profit, cost, units, orders); counting orders counts order_id
7. ranking           "top 5" / "bottom 3" / "highest" / "lowest" -> order and limit;
                     a superlative with nothing to rank becomes max / min
8. chart hint        an explicit word (bar, line, pie, scatter, table, trend, share),
                     else line over time, bar over categories, none for a single value

Anything the rules do not know is ignored; a question in which they know nothing
at all raises `UnrecognisedQuery` rather than guessing "total revenue".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, cast

from agents.reference import lexicon as lx
from agents.reference.dataset import TIME_DIMENSIONS
from agents.reference.intent import Aggregation, ChartHint, Filter, Intent, Operator, Order

MAX_QUERY_CHARS: Final = 500


class UnrecognisedQuery(ValueError):
    """The question is empty, too long, or names nothing the parser knows."""

    def __init__(self, message: str, *, query: str) -> None:
        super().__init__(message)
        self.query = query


@dataclass
class _Scan:
    tokens: list[str]
    consumed: set[int] = field(default_factory=set)
    filters: list[Filter] = field(default_factory=list)
    # Values named positively per column, for "Europe vs Asia" grouping.
    named: dict[str, list[str]] = field(default_factory=dict)
    # "which region ...": a singular dimension asked about, so a superlative means one row.
    asks_for_one: bool = False

    def free(self) -> Iterable[tuple[int, str]]:
        return ((i, t) for i, t in enumerate(self.tokens) if i not in self.consumed)

    def at(self, index: int) -> str:
        return self.tokens[index] if 0 <= index < len(self.tokens) else ""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _number(token: str) -> int | float:
    value = float(token)
    return int(value) if value.is_integer() and "." not in token else value


def _is_year(token: str) -> bool:
    return len(token) == 4 and token.isdigit() and token[:2] in ("19", "20")


def _add_equality(scan: _Scan, column: str, values: list[str | int]) -> None:
    unique = list(dict.fromkeys(values))
    if len(unique) == 1:
        scan.filters.append({"field": column, "op": "=", "value": unique[0]})
    elif unique:
        scan.filters.append({"field": column, "op": "in", "value": list(unique)})


def _comparator_subject(scan: _Scan, index: int) -> int | None:
    """Index of the measure a comparator applies to: "10 *units*" first, then "*revenue* of"."""
    after = index + 2
    if scan.at(after) in lx.METRIC_WORDS and after not in scan.consumed:
        return after
    before = index - 1
    while scan.at(before) in lx.COMPARATOR_LINKS:
        before -= 1
    if before >= 0 and scan.at(before) in lx.METRIC_WORDS and before not in scan.consumed:
        return before
    return None


def _numeric_filters(scan: _Scan) -> None:
    for i, token in list(scan.free()):
        op = lx.COMPARATORS.get(token)
        if op is None or not _is_number(scan.at(i + 1)):
            continue
        column = "revenue"  # "deals over 5000": the money an order brought
        subject = _comparator_subject(scan, i)
        if subject is not None and lx.METRIC_WORDS[scan.at(subject)] != "order_id":
            column = lx.METRIC_WORDS[scan.at(subject)]
            scan.consumed.add(subject)
        value = _number(scan.at(i + 1))
        scan.filters.append({"field": column, "op": cast(Operator, op), "value": value})
        scan.consumed.update({i, i + 1})


def _month_filters(scan: _Scan) -> None:
    months: list[str | int] = []
    for i, token in list(scan.free()):
        month = lx.MONTH_WORDS.get(token)
        year_at = i + 2 if scan.at(i + 1) == "of" else i + 1
        if month is None or not _is_year(scan.at(year_at)) or year_at in scan.consumed:
            continue
        months.append(f"{scan.at(year_at)}-{month:02d}")
        scan.consumed.update({i, year_at})
    _add_equality(scan, "month", months)


def _year_filters(scan: _Scan) -> None:
    years = [i for i, token in scan.free() if _is_year(token)]
    equal: list[str | int] = []
    skip: set[int] = set()
    for i in years:
        if i in skip:
            continue
        link, before = scan.at(i + 1), scan.at(i - 1)
        is_range = (i + 2) in years and link in lx.RANGE_LINKS
        if is_range and (link != "and" or before in lx.RANGE_STARTS):
            low, high = sorted((int(scan.at(i)), int(scan.at(i + 2))))
            scan.filters.append({"field": "year", "op": ">=", "value": low})
            scan.filters.append({"field": "year", "op": "<=", "value": high})
            skip.add(i + 2)
        elif before in lx.YEAR_PREPOSITIONS:
            op = cast(Operator, lx.YEAR_PREPOSITIONS[before])
            scan.filters.append({"field": "year", "op": op, "value": int(scan.at(i))})
        else:
            equal.append(int(scan.at(i)))
    scan.consumed.update(years)
    _add_equality(scan, "year", sorted(equal, key=int))


def _value_filters(scan: _Scan) -> None:
    negated: dict[str, list[str]] = {}
    negating = False
    for i, token in list(scan.free()):
        if token in lx.NEGATORS:
            negating = True
            continue
        entry = lx.VALUE_WORDS.get(token)
        if entry is None:
            negating = negating and token in lx.NEGATION_CARRIERS
            continue
        column, values = entry
        target = negated if negating else scan.named
        target.setdefault(column, []).extend(values)
        scan.consumed.add(i)
    for column, named in scan.named.items():
        _add_equality(scan, column, list(named))
    for column, excluded in negated.items():
        for value in dict.fromkeys(excluded):
            scan.filters.append({"field": column, "op": "!=", "value": value})


def _ranked_or_asked(scan: _Scan, index: int) -> bool:
    """ "which region", "top 5 products", "best selling category": a dimension asked about."""
    context = {scan.at(j) for j in range(max(0, index - 3), index)}
    return bool(context & (lx.QUESTION_WORDS | lx.DESCENDING_WORDS | lx.ASCENDING_WORDS))


def _group_by(scan: _Scan) -> list[str]:
    groups: list[str] = []
    grouping = False  # inside "by region and category"
    for i, token in list(scan.free()):
        if token in lx.PERIODIC_WORDS:
            groups.append(lx.PERIODIC_WORDS[token])
            scan.consumed.add(i)
        elif token in lx.GROUP_TRIGGERS:
            grouping = True
        elif token in lx.DIMENSION_WORDS:
            column, singular = lx.DIMENSION_WORDS[token]
            if grouping:
                groups.append(column)
            elif _ranked_or_asked(scan, i):
                groups.append(column)
                grouping = True
                scan.asks_for_one = scan.asks_for_one or singular
            scan.consumed.add(i)
        elif not (grouping and token in lx.GROUP_FILLERS):
            grouping = False
    tokens = set(scan.tokens)
    if tokens & lx.TREND_WORDS and not TIME_DIMENSIONS.intersection(groups):
        groups.append("month")
    if tokens & lx.COMPARE_WORDS:
        groups.extend(column for column, named in scan.named.items() if len(set(named)) > 1)
    return list(dict.fromkeys(groups))


def _measure(scan: _Scan) -> tuple[Aggregation | None, str | None]:
    found = {lx.AGGREGATION_WORDS[t] for _, t in scan.free() if t in lx.AGGREGATION_WORDS}
    aggregation = next((a for a in lx.AGGREGATION_PRIORITY if a in found), None)
    metric = next((lx.METRIC_WORDS[t] for _, t in scan.free() if t in lx.METRIC_WORDS), None)
    if aggregation == "count" and metric == "units":
        return "sum", "units"  # "how many units": units are summed, not counted
    if aggregation == "count" or metric == "order_id":
        return "count", "order_id"
    return cast(Aggregation | None, aggregation), metric


def _limit_after(scan: _Scan, index: int) -> int | None:
    token = scan.at(index + 1)
    if token in lx.NUMBER_WORDS:
        return lx.NUMBER_WORDS[token]
    if token.isdigit() and not _is_year(token) and int(token) > 0:
        return int(token)
    return None


def _ranking(scan: _Scan) -> tuple[Order | None, int | None]:
    order: Order | None = None
    explicit: Order | None = None
    limit: int | None = None
    for i, token in scan.free():
        direction: Order | None = None
        if token in lx.DESCENDING_WORDS:
            direction = "desc"
        elif token in lx.ASCENDING_WORDS:
            direction = "asc"
        if token in lx.EXPLICIT_ORDER_WORDS:
            explicit = direction
        order = order or direction
        if direction is not None or token in lx.LIMIT_WORDS:
            limit = limit or _limit_after(scan, i)
    order = explicit or order
    if order is not None and limit is None and scan.asks_for_one:
        limit = 1
    return order, limit


def _chart_hint(scan: _Scan, group_by: list[str], order: Order | None) -> ChartHint | None:
    explicit = next((lx.CHART_WORDS[t] for _, t in scan.free() if t in lx.CHART_WORDS), None)
    if explicit is not None:
        return cast(ChartHint, explicit)
    if not group_by:
        return None
    if order is None and group_by[0] in TIME_DIMENSIONS:
        return "line"
    return "bar"


def parse_intent(query: str) -> Intent:
    """The intent of `query` (see the module docstring for the rules).

    Raises UnrecognisedQuery when `query` is blank, longer than MAX_QUERY_CHARS,
    or names no measure, aggregation, dimension, filter, ranking or chart.
    """
    text = query.strip()
    if not text:
        raise UnrecognisedQuery("the query is empty", query=query)
    if len(text) > MAX_QUERY_CHARS:
        raise UnrecognisedQuery(
            f"the query is longer than {MAX_QUERY_CHARS} characters", query=query
        )
    scan = _Scan(lx.tokenize(text))
    _numeric_filters(scan)
    _month_filters(scan)
    _year_filters(scan)
    _value_filters(scan)
    group_by = _group_by(scan)
    aggregation, metric = _measure(scan)
    order, limit = _ranking(scan)
    chart_hint = _chart_hint(scan, group_by, order)
    if not (aggregation or metric or group_by or scan.filters or order or chart_hint):
        raise UnrecognisedQuery(
            "no measure, dimension, filter or chart recognised in the query", query=query
        )
    if order is not None and not group_by:
        # Nothing to rank: "the highest revenue" asks for the largest value.
        if aggregation is None:
            aggregation = "max" if order == "desc" else "min"
        order, limit = None, None
    return {
        "query": text,
        "metric": metric or "revenue",
        "aggregation": aggregation or "sum",
        "group_by": group_by,
        "filters": scan.filters,
        "order": order,
        "limit": limit,
        "chart_hint": chart_hint,
    }
