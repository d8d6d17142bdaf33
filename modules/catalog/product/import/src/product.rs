//! One CSV row checked and turned into a product.

use serde::Serialize;

/// A product row that passed every check.
#[derive(Serialize, Debug, PartialEq)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// The price as written, normalised (`"7"` stays `"7"`, `"07.50"` becomes `"7.50"`):
    /// a decimal string so no cent is lost to floating point.
    pub price: String,
    pub quantity: i64,
}

/// Checks one row, given its fields by column name (`field("price")`); the error is the
/// reason shown in `rejected`.
pub fn parse<'a>(field: impl Fn(&str) -> &'a str) -> Result<Product, String> {
    let sku = field("sku");
    if sku.is_empty() {
        return Err("sku is empty".into());
    }
    let name = field("name");
    if name.is_empty() {
        return Err(format!("sku `{sku}`: name is empty"));
    }
    Ok(Product {
        sku: sku.into(),
        name: name.into(),
        price: price(field("price")).map_err(|e| format!("sku `{sku}`: {e}"))?,
        quantity: quantity(field("quantity")).map_err(|e| format!("sku `{sku}`: {e}"))?,
    })
}

/// A non-negative decimal with at most 4 decimal places, normalised.
fn price(text: &str) -> Result<String, String> {
    if text.starts_with('-') {
        return Err(format!("price `{text}` is negative"));
    }
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || text.ends_with('.') {
        return Err(format!("price `{text}` is not a decimal number like 12.50"));
    }
    if fraction.len() > 4 {
        return Err(format!("price `{text}` has more than 4 decimal places"));
    }
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    Ok(if fraction.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{fraction}")
    })
}

/// A whole number of items, not negative.
fn quantity(text: &str) -> Result<i64, String> {
    let n: i64 = text
        .parse()
        .map_err(|_| format!("quantity `{text}` is not a whole number"))?;
    if n < 0 {
        return Err(format!("quantity `{text}` is negative"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(price: &str, quantity: &str) -> Result<Product, String> {
        parse(|column| match column {
            "sku" => "A1",
            "name" => "Mug",
            "price" => price,
            "quantity" => quantity,
            _ => "",
        })
    }

    #[test]
    fn prices_are_normalised() {
        assert_eq!(check("07.50", "3").unwrap().price, "7.50");
        assert_eq!(check("0", "3").unwrap().price, "0");
    }

    #[test]
    fn bad_prices_say_why() {
        assert_eq!(
            check("-1", "3").unwrap_err(),
            "sku `A1`: price `-1` is negative"
        );
        assert_eq!(
            check("1,5", "3").unwrap_err(),
            "sku `A1`: price `1,5` is not a decimal number like 12.50"
        );
        assert_eq!(
            check("1.", "3").unwrap_err(),
            "sku `A1`: price `1.` is not a decimal number like 12.50"
        );
        assert_eq!(
            check("1.00001", "3").unwrap_err(),
            "sku `A1`: price `1.00001` has more than 4 decimal places"
        );
    }

    #[test]
    fn quantities_are_whole_and_not_negative() {
        assert_eq!(
            check("1", "2.5").unwrap_err(),
            "sku `A1`: quantity `2.5` is not a whole number"
        );
        assert_eq!(
            check("1", "-2").unwrap_err(),
            "sku `A1`: quantity `-2` is negative"
        );
    }
}
