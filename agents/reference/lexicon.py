"""The rule-based parser's vocabulary, and the tokenizer that prepares a question for it.

`tokenize` lowercases a question, normalises numbers ("$1,200" -> "1200",
"10k" -> "10000", "2022-2023" -> "2022 to 2023") and comparison symbols, and
joins known multi-word phrases into one token ("north america" ->
"north_america", "how many" -> "how_many"), so every rule in the parser looks at
single tokens. Canonical values here are the dataset's own (agents.reference.dataset).
"""

from __future__ import annotations

import re
from typing import Final

from agents.reference.dataset import CATEGORIES, CHANNELS, PRODUCTS, REGIONS

AGGREGATION_WORDS: Final[dict[str, str]] = {
    "average": "avg", "avg": "avg", "mean": "avg", "averages": "avg",
    "total": "sum", "sum": "sum", "overall": "sum", "cumulative": "sum", "totals": "sum",
    "number_of": "count", "how_many": "count", "count": "count", "count_of": "count",
    "max": "max", "maximum": "max", "peak": "max",
    "min": "min", "minimum": "min",
}  # fmt: skip
# When several aggregation words appear ("total number of orders"), the most specific wins.
AGGREGATION_PRIORITY: Final = ("count", "avg", "max", "min", "sum")

METRIC_WORDS: Final[dict[str, str]] = {
    "revenue": "revenue", "revenues": "revenue", "sales": "revenue", "income": "revenue",
    "turnover": "revenue",
    "profit": "profit", "profits": "profit", "margin": "profit", "margins": "profit",
    "earnings": "profit", "profitability": "profit", "profitable": "profit",
    "cost": "cost", "costs": "cost", "expense": "cost", "expenses": "cost",
    "spend": "cost", "spending": "cost", "cogs": "cost",
    "units": "units", "unit": "units", "quantity": "units", "quantities": "units",
    "volume": "units", "units_sold": "units", "items_sold": "units", "sold": "units",
    "order_value": "revenue", "order_values": "revenue", "order_size": "revenue",
    "deal_size": "revenue", "basket_size": "revenue",
    # Orders are counted, never summed ("order" alone is left out: "in descending order").
    "orders": "order_id", "transactions": "order_id",
    "transaction": "order_id", "deals": "order_id", "purchases": "order_id",
}  # fmt: skip

# Dimension words: token -> (column, is the word singular?).
DIMENSION_WORDS: Final[dict[str, tuple[str, bool]]] = {
    "region": ("region", True), "regions": ("region", False), "regional": ("region", False),
    "territory": ("region", True), "territories": ("region", False),
    "country": ("country", True), "countries": ("country", False),
    "market": ("country", True), "markets": ("country", False),
    "product": ("product", True), "products": ("product", False),
    "sku": ("product", True), "skus": ("product", False),
    "category": ("category", True), "categories": ("category", False),
    "product_category": ("category", True), "product_categories": ("category", False),
    "product_line": ("category", True), "product_lines": ("category", False),
    "channel": ("channel", True), "channels": ("channel", False),
    "sales_channel": ("channel", True), "sales_channels": ("channel", False),
    "year": ("year", True), "years": ("year", False),
    "quarter": ("quarter", True), "quarters": ("quarter", False),
    "month": ("month", True), "months": ("month", False),
    "day": ("date", True), "days": ("date", False), "date": ("date", True),
    "dates": ("date", False),
}  # fmt: skip
# Words that group on their own: "monthly revenue", "annual profit".
PERIODIC_WORDS: Final[dict[str, str]] = {
    "monthly": "month", "month_over_month": "month", "mom": "month",
    "quarterly": "quarter", "quarter_over_quarter": "quarter", "qoq": "quarter",
    "yearly": "year", "annual": "year", "annually": "year", "year_over_year": "year",
    "yoy": "year", "over_the_years": "year",
    "daily": "date", "day_by_day": "date",
}  # fmt: skip
# Words asking for a trend; they group by month unless a time column is already grouped.
TREND_WORDS: Final = frozenset({"over_time", "trend", "trends", "timeline", "time_series"})
GROUP_TRIGGERS: Final = frozenset(
    {"by", "per", "each", "every", "across", "for_each", "for_every", "grouped_by", "split_by"}
)
# Words that may sit between a trigger and its dimension, or between two dimensions.
GROUP_FILLERS: Final = frozenset({"the", "all", "each", "every", "and", "then", "its", "their"})
QUESTION_WORDS: Final = frozenset({"which", "what"})
COMPARE_WORDS: Final = frozenset({"vs", "versus", "compare", "compared", "comparing", "comparison"})

NEGATORS: Final = frozenset(
    {"excluding", "exclude", "except", "outside", "not", "without", "other_than", "besides"}
)
NEGATION_CARRIERS: Final = frozenset({"and", "or", "in", "the", "nor"})

COMPARATORS: Final[dict[str, str]] = {
    "over": ">", "above": ">", "exceeding": ">", "exceeds": ">", "more_than": ">",
    "greater_than": ">", "higher_than": ">", "bigger_than": ">", "larger_than": ">",
    "at_least": ">=", "no_less_than": ">=", "minimum_of": ">=",
    "under": "<", "below": "<", "less_than": "<", "lower_than": "<", "smaller_than": "<",
    "fewer_than": "<",
    "at_most": "<=", "no_more_than": "<=", "maximum_of": "<=", "up_to": "<=",
}  # fmt: skip
# Words linking a measure to its comparator: "revenue *of* over 100", "profit *is* below 0".
COMPARATOR_LINKS: Final = frozenset({"is", "was", "are", "were", "of", "with", "where"})
YEAR_PREPOSITIONS: Final[dict[str, str]] = {
    "since": ">=", "from": ">=", "after": ">", "before": "<", "until": "<=", "through": "<=",
    "till": "<=", "prior_to": "<",
}  # fmt: skip
RANGE_STARTS: Final = frozenset({"between", "from"})
RANGE_LINKS: Final = frozenset({"to", "and", "through", "until", "till"})

DESCENDING_WORDS: Final = frozenset(
    {"top", "highest", "most", "best", "largest", "biggest", "greatest", "descending"}
)
ASCENDING_WORDS: Final = frozenset(
    {"bottom", "lowest", "least", "worst", "smallest", "fewest", "ascending"}
)
EXPLICIT_ORDER_WORDS: Final = frozenset({"ascending", "descending"})
LIMIT_WORDS: Final = frozenset({"first", "limit"})
NUMBER_WORDS: Final[dict[str, int]] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip

CHART_WORDS: Final[dict[str, str]] = {
    "bar": "bar", "bars": "bar", "bar_chart": "bar", "bar_graph": "bar", "column_chart": "bar",
    "histogram": "bar",
    "line": "line", "lines": "line", "line_chart": "line", "line_graph": "line",
    "trend": "line", "trends": "line", "over_time": "line", "timeline": "line",
    "time_series": "line",
    "pie": "pie", "pie_chart": "pie", "donut": "pie", "doughnut": "pie", "share": "pie",
    "proportion": "pie", "proportions": "pie",
    "scatter": "scatter", "scatterplot": "scatter", "scatter_plot": "scatter",
    "table": "table", "tabular": "table", "list": "table",
}  # fmt: skip

MONTH_WORDS: Final[dict[str, int]] = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4,
    "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
    "september": 9, "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11,
    "nov": 11, "december": 12, "dec": 12,
}  # fmt: skip


def _plurals(word: str) -> tuple[str, ...]:
    if word.endswith("s"):
        return (word,)
    if word.endswith("y") and not word.endswith("ey"):
        return (word, word[:-1] + "ies")
    if word.endswith(("x", "ch", "sh")):
        return (word, word + "es")
    return (word, word + "s")


_ValueWords = dict[str, tuple[str, tuple[str, ...]]]


def _add(words: _ValueWords, column: str, value: str, *aliases: str) -> None:
    for alias in (value.lower(), *aliases):
        words[alias.replace(" ", "_")] = (column, (value,))


def _place_words(words: _ValueWords) -> None:
    for region, countries in REGIONS.items():
        _add(words, "region", region)
        for country in countries:
            _add(words, "country", country)
    _add(words, "region", "North America", "northamerica")
    _add(words, "region", "Europe", "european", "emea", "eu")
    _add(words, "region", "Asia Pacific", "asia", "apac", "asia_pac", "asian")
    _add(words, "region", "Latin America", "latam", "south america", "central america")
    _add(words, "country", "United States", "usa", "united states of america")
    _add(words, "country", "United Kingdom", "uk", "britain", "great britain", "england")


def _catalogue_words(words: _ValueWords) -> None:
    for category in CATEGORIES:
        _add(words, "category", category)
    _add(words, "category", "Electronics", "electronic", "gadgets")
    _add(words, "category", "Office Supplies", "office supply", "supplies", "stationery")
    _add(words, "category", "Accessories", "accessory", "peripherals")
    for product in PRODUCTS:
        _add(words, "product", product.name, *_plurals(product.name.lower()))
    _add(words, "product", "Laptop", "notebook", "notebooks")
    _add(words, "product", "Smartphone", "phone", "phones", "mobile", "mobiles", "mobile phones")
    _add(words, "product", "Office Chair", "chair", "chairs")
    _add(words, "product", "Bookshelf", "bookshelves", "bookcase", "bookcases")
    _add(words, "product", "Filing Cabinet", "cabinet", "cabinets")
    _add(words, "product", "Printer Paper", "paper")
    _add(words, "product", "Pens", "pen")
    _add(words, "product", "Headphones", "headphone", "headset", "headsets")
    _add(words, "product", "Mouse", "mice")
    for channel in CHANNELS:
        _add(words, "channel", channel)
    _add(words, "channel", "Online", "e commerce", "ecommerce", "web", "internet")
    _add(words, "channel", "Retail", "in store", "store", "stores", "shop", "shops")
    _add(words, "channel", "Partner", "partners", "reseller", "resellers", "wholesale")


def _quarter_words(words: _ValueWords) -> None:
    quarter_names = (
        ("first", "1st"), ("second", "2nd"), ("third", "3rd"), ("fourth", "4th"),
    )  # fmt: skip
    for number, names in enumerate(quarter_names, start=1):
        for alias in (f"q{number}", *(f"{name} quarter" for name in names)):
            words[alias.replace(" ", "_")] = ("quarter", (f"Q{number}",))
    for alias in ("h1", "first_half"):
        words[alias] = ("quarter", ("Q1", "Q2"))
    for alias in ("h2", "second_half"):
        words[alias] = ("quarter", ("Q3", "Q4"))


def _value_words() -> _ValueWords:
    words: _ValueWords = {}
    _place_words(words)
    _catalogue_words(words)
    _quarter_words(words)
    return words


# Token -> (column, the value(s) it stands for): "europe" -> ("region", ("Europe",)).
VALUE_WORDS: Final = _value_words()

_EXTRA_PHRASES: Final = (
    "number of", "how many", "count of", "over time", "time series", "for each", "for every",
    "grouped by", "split by", "more than", "greater than", "higher than", "bigger than",
    "larger than", "at least", "no less than", "minimum of", "less than", "lower than",
    "smaller than", "fewer than", "at most", "no more than", "maximum of", "up to",
    "other than", "prior to", "month over month", "quarter over quarter", "year over year",
    "over the years", "day by day", "bar chart", "bar graph", "column chart", "line chart",
    "line graph", "pie chart", "scatter plot", "units sold", "items sold",
    "order value", "order values", "order size", "deal size", "basket size",
    "product category", "product categories", "product line", "product lines",
    "sales channel", "sales channels",
)  # fmt: skip


def _phrase_pattern() -> re.Pattern[str]:
    phrases = {p for p in _EXTRA_PHRASES}
    phrases |= {word.replace("_", " ") for word in VALUE_WORDS if "_" in word}
    # Longest first, so "north america" wins over "america" at the same position.
    alternatives = sorted(phrases, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(p) for p in alternatives) + r")\b")


_PHRASES: Final = _phrase_pattern()
_SYMBOLS: Final = ((">=", " at_least "), ("<=", " at_most "), ("!=", " not "),
                   (">", " over "), ("<", " under "))  # fmt: skip


def _expand_thousands(match: re.Match[str]) -> str:
    value = float(match.group(1)) * (1_000_000 if match.group(2) == "m" else 1000)
    return str(int(value)) if value.is_integer() else str(value)


def tokenize(query: str) -> list[str]:
    """Lowercased tokens of `query`, numbers normalised and known phrases joined by `_`."""
    text = query.lower()
    text = re.sub(r"\bu\.s\.a?\.?(?=\W|$)", "usa", text)
    text = re.sub(r"\bu\.k\.?(?=\W|$)", "uk", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    text = re.sub(r"[$€£]", " ", text)
    text = re.sub(r"\b(\d+(?:\.\d+)?)([km])\b", _expand_thousands, text)
    text = re.sub(r"\b((?:19|20)\d\d)\s*[-–]\s*((?:19|20)\d\d)\b", r"\1 to \2", text)
    for symbol, word in _SYMBOLS:
        text = text.replace(symbol, word)
    text = re.sub(r"[^a-z0-9.\s]", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    text = " ".join(text.split())
    text = _PHRASES.sub(lambda m: m.group(0).replace(" ", "_"), text)
    return text.split()
