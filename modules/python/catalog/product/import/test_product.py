"""Native unit tests of the pure part (`python3 -m unittest` in this folder)."""

import unittest

from product import parse_product


def check(price: str, quantity: str):
    row = {"sku": "A1", "name": "Mug", "price": price, "quantity": quantity}
    return parse_product(lambda column: row.get(column, ""))


class ProductTest(unittest.TestCase):
    def test_prices_are_normalised(self):
        self.assertEqual(check("07.50", "3")["price"], "7.50")
        self.assertEqual(check("0", "3")["price"], "0")

    def test_bad_prices_say_why(self):
        for price, reason in [
            ("-1", "sku `A1`: price `-1` is negative"),
            ("1,5", "sku `A1`: price `1,5` is not a decimal number like 12.50"),
            ("1.", "sku `A1`: price `1.` is not a decimal number like 12.50"),
            ("1.00001", "sku `A1`: price `1.00001` has more than 4 decimal places"),
        ]:
            with self.assertRaises(ValueError) as e:
                check(price, "3")
            self.assertEqual(str(e.exception), reason)

    def test_quantities_are_whole_and_not_negative(self):
        with self.assertRaisesRegex(ValueError, "quantity `2.5` is not a whole number"):
            check("1", "2.5")
        with self.assertRaisesRegex(ValueError, "quantity `-2` is negative"):
            check("1", "-2")


if __name__ == "__main__":
    unittest.main()
