//! `catalog/product/import`: validates a product CSV as exported from a shop or a
//! supplier's spreadsheet, writes the good rows to a `products.jsonl` artifact and lists
//! the bad ones with their line and reason.
//!
//! ```json
//! {"csv": "sku,name,price,quantity,brand\nA-1,\"Mug, large\",7.50,12,Acme\nA-2,Plate,-1,3,Acme\n",
//!  "required": ["brand"]}
//! ```
//! returns `{"imported": 1, "rejected": [{"line": 3, "reason": "sku `A-2`: price `-1` is negative"}], ...}`.
//!
//! Columns `sku`, `name`, `price` and `quantity` must be in the header (any order, any
//! case); other columns are kept as the product's `attributes`. A row is rejected when its
//! sku is empty or already seen, its name is empty, its price is not a non-negative decimal
//! (at most 4 places), its quantity is not a non-negative whole number, or a `required`
//! column is empty.

mod product;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use stepwise_guest::{ErrorContext, Progress, StepError, artifact, ensure_permanent, export_step};

/// Columns every product CSV has.
const CORE_COLUMNS: [&str; 4] = ["sku", "name", "price", "quantity"];

/// Settings of `catalog/product/import`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The CSV text, header line first. Fields may be quoted (`"Mug, large"`), quotes
    /// inside doubled (`""`).
    csv: String,
    /// Further columns that must be in the header and non-empty in every row.
    #[serde(default)]
    required: Vec<String>,
    /// Field separator; `;` for spreadsheets saved in many European locales.
    #[serde(default = "comma")]
    delimiter: char,
    /// Name of the artifact the imported products are written to, one JSON per line.
    #[serde(default = "default_file")]
    file: String,
    /// At most this many rejected rows are listed in the output (all are counted).
    #[serde(default = "a_hundred")]
    max_rejected: usize,
}

fn comma() -> char {
    ','
}

fn default_file() -> String {
    "products.jsonl".into()
}

fn a_hundred() -> usize {
    100
}

/// A row that was not imported.
#[derive(Serialize)]
struct Rejected {
    /// Line in the CSV where the row starts (the header is line 1).
    line: u64,
    reason: String,
}

/// What the step returns.
#[derive(Serialize)]
struct Output {
    imported: usize,
    rejected: Vec<Rejected>,
    /// Rejected rows in all, also those beyond `max_rejected`.
    rejected_total: usize,
    /// The artifact holding the imported products.
    file: String,
}

/// One line of the products artifact.
#[derive(Serialize)]
struct Imported<'a> {
    #[serde(flatten)]
    product: product::Product,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<&'a str, &'a str>,
}

fn import(settings: Settings) -> Result<Output, StepError> {
    // The CSV comes with the settings: what is wrong with it now is wrong on
    // every attempt, so these errors are permanent.
    ensure_permanent!(
        settings.delimiter.is_ascii(),
        "the delimiter must be one ASCII character, not `{}`",
        settings.delimiter
    );
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(settings.delimiter as u8)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(settings.csv.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .context("the CSV header line")
        .map_err(StepError::into_permanent)?
        .iter()
        .map(str::to_lowercase)
        .collect();
    let column: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let required: Vec<String> = settings.required.iter().map(|c| c.to_lowercase()).collect();
    for name in CORE_COLUMNS
        .iter()
        .copied()
        .chain(required.iter().map(String::as_str))
    {
        ensure_permanent!(
            column.contains_key(name),
            "the CSV has no `{name}` column; its header is `{}`",
            header.join(",")
        );
    }
    let records = reader
        .records()
        .collect::<Result<Vec<_>, _>>()
        .context("the CSV does not parse")
        .map_err(StepError::into_permanent)?;

    let progress = Progress::new(records.len() as u64);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut products = String::new();
    let mut output = Output {
        imported: 0,
        rejected: Vec::new(),
        rejected_total: 0,
        file: settings.file.clone(),
    };
    for record in &records {
        let line = record.position().map_or(0, |p| p.line());
        let field = |name: &str| column.get(name).and_then(|&i| record.get(i)).unwrap_or("");
        let checked = product::parse(field).and_then(|product| {
            if let Some(first) = seen.get(&product.sku) {
                return Err(format!(
                    "duplicate sku `{}` (first on line {first})",
                    product.sku
                ));
            }
            match required.iter().find(|name| field(name).is_empty()) {
                Some(name) => Err(format!("sku `{}`: `{name}` is empty", product.sku)),
                None => Ok(product),
            }
        });
        match checked {
            Ok(product) => {
                seen.insert(product.sku.clone(), line);
                let attributes = header
                    .iter()
                    .map(String::as_str)
                    .filter(|name| !CORE_COLUMNS.contains(name))
                    .map(|name| (name, field(name)))
                    .filter(|(_, value)| !value.is_empty())
                    .collect();
                products.push_str(&serde_json::to_string(&Imported {
                    product,
                    attributes,
                })?);
                products.push('\n');
                output.imported += 1;
            }
            Err(reason) => {
                output.rejected_total += 1;
                if output.rejected.len() < settings.max_rejected {
                    output.rejected.push(Rejected { line, reason });
                }
            }
        }
        progress.advance(format_args!("checked line {line}"));
    }
    artifact::write(&settings.file, products)?;
    Ok(output)
}

export_step!(import);
