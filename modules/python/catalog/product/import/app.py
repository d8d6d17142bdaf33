"""`catalog/product/import` in Python: validates a product CSV as exported from a shop
or a supplier's spreadsheet, writes the good rows to a `products.jsonl` artifact and
lists the bad ones with their line and reason. The same step as the Rust example in
`modules/catalog/product/import`, with the same settings and output.

    {"csv": "sku,name,price,quantity,brand\\nA-1,\\"Mug, large\\",7.50,12,Acme\\n",
     "required": ["brand"]}

Columns `sku`, `name`, `price` and `quantity` must be in the header (any order, any
case); other columns are kept as the product's `attributes`.
"""

import csv
import io
import json
from dataclasses import dataclass, field

import stepwise
from product import parse_product

CORE_COLUMNS = ("sku", "name", "price", "quantity")


@dataclass
class Settings:
    #: The CSV text, header line first; fields may be quoted, quotes inside doubled.
    csv: str
    #: Further columns that must be in the header and non-empty in every row.
    required: list[str] = field(default_factory=list)
    #: Field separator; `;` for spreadsheets saved in many European locales.
    delimiter: str = ","
    #: Name of the artifact the imported products are written to, one JSON per line.
    file: str = "products.jsonl"
    #: At most this many rejected rows are listed in the output (all are counted).
    max_rejected: int = 100


@stepwise.step
def import_products(settings: Settings) -> dict:
    # The CSV comes with the settings: what is wrong with it now is wrong on every
    # attempt, so these errors are permanent.
    if len(settings.delimiter) != 1 or not settings.delimiter.isascii():
        raise stepwise.PermanentError(
            f"the delimiter must be one ASCII character, not `{settings.delimiter}`"
        )
    reader = csv.reader(io.StringIO(settings.csv), delimiter=settings.delimiter)
    rows = []  # (line where the row starts, fields); the header is line 1
    try:
        start = 1
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise stepwise.PermanentError(f"the CSV does not parse: {e}") from None
    if not rows:
        raise stepwise.PermanentError("the CSV is empty; its first line must be the header")
    header = [name.strip().lower() for name in rows[0][1]]
    column = {name: i for i, name in enumerate(header)}
    required = [name.lower() for name in settings.required]
    for name in (*CORE_COLUMNS, *required):
        if name not in column:
            raise stepwise.PermanentError(
                f"the CSV has no `{name}` column; its header is `{','.join(header)}`"
            )

    records = [(line, row) for line, row in rows[1:] if any(v.strip() for v in row)]
    progress = stepwise.Progress(len(records))
    seen: dict[str, int] = {}
    products = []
    rejected = []
    rejected_total = 0
    for line, row in records:

        def value(name: str) -> str:
            i = column.get(name)
            return row[i].strip() if i is not None and i < len(row) else ""

        try:
            product = parse_product(value)
            if product["sku"] in seen:
                raise ValueError(
                    f"duplicate sku `{product['sku']}` (first on line {seen[product['sku']]})"
                )
            missing = next((name for name in required if not value(name)), None)
            if missing:
                raise ValueError(f"sku `{product['sku']}`: `{missing}` is empty")
        except ValueError as reason:
            rejected_total += 1
            if len(rejected) < settings.max_rejected:
                rejected.append({"line": line, "reason": str(reason)})
        else:
            seen[product["sku"]] = line
            attributes = {
                name: value(name)
                for name in header
                if name not in CORE_COLUMNS and value(name)
            }
            if attributes:
                product["attributes"] = attributes
            products.append(json.dumps(product) + "\n")
        progress.advance(f"checked line {line}")
    stepwise.artifact.write(settings.file, "".join(products))
    return {
        "imported": len(products),
        "rejected": rejected,
        "rejected_total": rejected_total,
        "file": settings.file,
    }
