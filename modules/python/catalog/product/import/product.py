"""One CSV row checked and turned into a product (pure: unit-tested natively)."""

from typing import Callable


def parse_product(field: Callable[[str], str]) -> dict:
    """The row's product, given its fields by column name; raises ValueError with
    the reason shown in `rejected`."""
    sku = field("sku")
    if not sku:
        raise ValueError("sku is empty")
    name = field("name")
    if not name:
        raise ValueError(f"sku `{sku}`: name is empty")
    try:
        price = _price(field("price"))
        quantity = _quantity(field("quantity"))
    except ValueError as e:
        raise ValueError(f"sku `{sku}`: {e}") from None
    return {"sku": sku, "name": name, "price": price, "quantity": quantity}


def _price(text: str) -> str:
    """A non-negative decimal with at most 4 places, normalised (`07.50` -> `7.50`):
    kept as text so no cent is lost to floating point."""
    if text.startswith("-"):
        raise ValueError(f"price `{text}` is negative")
    whole, _, fraction = text.partition(".")
    digits = lambda s: all("0" <= c <= "9" for c in s)  # noqa: E731
    if not whole or not digits(whole) or not digits(fraction) or text.endswith("."):
        raise ValueError(f"price `{text}` is not a decimal number like 12.50")
    if len(fraction) > 4:
        raise ValueError(f"price `{text}` has more than 4 decimal places")
    whole = whole.lstrip("0") or "0"
    return f"{whole}.{fraction}" if fraction else whole


def _quantity(text: str) -> int:
    """A whole number of items, not negative."""
    digits = text[1:] if text.startswith("-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        raise ValueError(f"quantity `{text}` is not a whole number")
    if text.startswith("-"):
        raise ValueError(f"quantity `{text}` is negative")
    return int(digits)
