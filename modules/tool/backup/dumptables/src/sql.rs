//! Rendering tables as SQL text: identifier quoting, literal escaping and column types.

use serde::Deserialize;
use serde_json::Value;
use stepwise_guest::{StepError, ensure};

/// Which SQL flavour the dump is written for.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// MySQL / MariaDB (the usual PHP shop database): backtick identifiers, backslash
    /// escapes in strings.
    #[default]
    Mysql,
    /// Standard SQL (PostgreSQL, SQLite): double-quoted identifiers, `''` in strings.
    Standard,
}

/// A column: a bare name (its type is inferred from the values) or a name with an
/// explicit SQL type such as `{"name": "price", "type": "DECIMAL(10,2)"}`.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Column {
    /// Column name; the type is inferred.
    Name(String),
    /// Column name and SQL type.
    Typed {
        /// Column name.
        name: String,
        /// SQL type, copied into `CREATE TABLE`.
        #[serde(rename = "type")]
        sql_type: String,
    },
}

impl Column {
    fn name(&self) -> &str {
        match self {
            Column::Name(name) | Column::Typed { name, .. } => name,
        }
    }
}

/// One table to dump.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Table name.
    pub name: String,
    /// Columns, in the order of each row's values.
    pub columns: Vec<Column>,
    /// Rows: one JSON value per column (`null`, number, boolean, string; arrays and
    /// objects are stored as JSON text).
    #[serde(default)]
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    /// Checks names, types and row widths, so a bad table fails the step before anything
    /// is written.
    pub fn validate(&self) -> Result<(), StepError> {
        let table = &self.name;
        ensure!(!table.trim().is_empty(), "a table has an empty name");
        ensure!(!self.columns.is_empty(), "table `{table}` has no columns");
        for (i, column) in self.columns.iter().enumerate() {
            let name = column.name();
            ensure!(
                !name.is_empty(),
                "table `{table}`: column {} has no name",
                i + 1
            );
            ensure!(
                self.columns[..i].iter().all(|c| c.name() != name),
                "table `{table}`: column `{name}` appears twice"
            );
            if let Column::Typed { sql_type, .. } = column {
                ensure!(
                    !sql_type.is_empty()
                        && sql_type
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || " _(),".contains(c)),
                    "table `{table}`: column `{name}` has type `{sql_type}`; use letters, \
                     digits, spaces, `_`, `(`, `)` and `,` only"
                );
            }
        }
        for (i, row) in self.rows.iter().enumerate() {
            ensure!(
                row.len() == self.columns.len(),
                "table `{table}`: row {} has {} values but the table has {} columns",
                i + 1,
                row.len(),
                self.columns.len()
            );
        }
        Ok(())
    }

    /// `DROP TABLE IF EXISTS` + `CREATE TABLE` + batched `INSERT`s. Dropping first makes
    /// each table's part replayable on its own, so a part written twice (a retry after a
    /// crash between writing and checkpointing) still restores correctly.
    pub fn to_sql(&self, dialect: Dialect, rows_per_insert: usize) -> String {
        let table = dialect.ident(&self.name);
        let mut sql = format!(
            "\n-- Table {table}, rows: {}\nDROP TABLE IF EXISTS {table};\nCREATE TABLE {table} (\n",
            self.rows.len()
        );
        let definitions: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, column)| {
                let sql_type = match column {
                    Column::Typed { sql_type, .. } => sql_type.as_str(),
                    Column::Name(_) => infer_type(self.rows.iter().map(|row| &row[i])),
                };
                format!("  {} {sql_type}", dialect.ident(column.name()))
            })
            .collect();
        sql.push_str(&definitions.join(",\n"));
        sql.push_str("\n);\n");
        let names: Vec<String> = self
            .columns
            .iter()
            .map(|c| dialect.ident(c.name()))
            .collect();
        for batch in self.rows.chunks(rows_per_insert.max(1)) {
            sql.push_str(&format!(
                "INSERT INTO {table} ({}) VALUES\n",
                names.join(", ")
            ));
            let tuples: Vec<String> = batch
                .iter()
                .map(|row| {
                    let values: Vec<String> = row.iter().map(|v| dialect.literal(v)).collect();
                    format!("({})", values.join(", "))
                })
                .collect();
            sql.push_str(&tuples.join(",\n"));
            sql.push_str(";\n");
        }
        sql
    }
}

impl Dialect {
    /// A quoted identifier; the quote character inside a name is doubled.
    pub fn ident(self, name: &str) -> String {
        let quote = match self {
            Dialect::Mysql => '`',
            Dialect::Standard => '"',
        };
        let doubled = name.replace(quote, &format!("{quote}{quote}"));
        format!("{quote}{doubled}{quote}")
    }

    /// A value as an SQL literal.
    pub fn literal(self, value: &Value) -> String {
        match value {
            Value::Null => "NULL".into(),
            Value::Bool(true) => "TRUE".into(),
            Value::Bool(false) => "FALSE".into(),
            Value::Number(n) => n.to_string(),
            Value::String(s) => self.string(s),
            Value::Array(_) | Value::Object(_) => self.string(&value.to_string()),
        }
    }

    fn string(self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('\'');
        for c in text.chars() {
            match (self, c) {
                (Dialect::Standard, '\'') => out.push_str("''"),
                (Dialect::Standard, c) => out.push(c),
                (Dialect::Mysql, '\'') => out.push_str("\\'"),
                (Dialect::Mysql, '\\') => out.push_str("\\\\"),
                (Dialect::Mysql, '\0') => out.push_str("\\0"),
                (Dialect::Mysql, '\n') => out.push_str("\\n"),
                (Dialect::Mysql, '\r') => out.push_str("\\r"),
                (Dialect::Mysql, '\x1a') => out.push_str("\\Z"),
                (Dialect::Mysql, c) => out.push(c),
            }
        }
        out.push('\'');
        out
    }
}

/// The narrowest type that holds every non-null value: BIGINT, DOUBLE PRECISION, BOOLEAN,
/// or TEXT (also for a column with no values).
fn infer_type<'a>(values: impl Iterator<Item = &'a Value>) -> &'static str {
    let mut kind: Option<&'static str> = None;
    for value in values {
        let this = match value {
            Value::Null => continue,
            Value::Number(n) if n.is_i64() || n.is_u64() => "BIGINT",
            Value::Number(_) => "DOUBLE PRECISION",
            Value::Bool(_) => "BOOLEAN",
            _ => return "TEXT",
        };
        kind = Some(match (kind, this) {
            (None, this) => this,
            (Some(a), b) if a == b => a,
            (Some("BIGINT" | "DOUBLE PRECISION"), "BIGINT" | "DOUBLE PRECISION") => {
                "DOUBLE PRECISION"
            }
            _ => return "TEXT",
        });
    }
    kind.unwrap_or("TEXT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mysql_strings_escape_quotes_backslashes_and_control_characters() {
        let s = Dialect::Mysql.literal(&json!("O'Brien \\ line\nnext\0"));
        assert_eq!(s, r"'O\'Brien \\ line\nnext\0'");
    }

    #[test]
    fn standard_strings_double_quotes_only() {
        let s = Dialect::Standard.literal(&json!("O'Brien \\ x"));
        assert_eq!(s, r"'O''Brien \ x'");
    }

    #[test]
    fn identifiers_double_their_quote() {
        assert_eq!(Dialect::Mysql.ident("we`ird"), "`we``ird`");
        assert_eq!(Dialect::Standard.ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn types_are_inferred_from_values() {
        let v = [json!(1), json!(null), json!(2.5)];
        assert_eq!(infer_type(v.iter()), "DOUBLE PRECISION");
        assert_eq!(infer_type([json!(1), json!(2)].iter()), "BIGINT");
        assert_eq!(infer_type([json!(1), json!("a")].iter()), "TEXT");
        assert_eq!(infer_type([json!(null)].iter()), "TEXT");
    }

    #[test]
    fn a_table_renders_create_and_batched_inserts() {
        let table: Table = serde_json::from_value(json!({
            "name": "customers",
            "columns": ["id", {"name": "email", "type": "VARCHAR(255)"}],
            "rows": [[1, "a@x"], [2, "b@x"], [3, null]]
        }))
        .unwrap();
        table.validate().unwrap();
        let sql = table.to_sql(Dialect::Mysql, 2);
        assert!(
            sql.contains("CREATE TABLE `customers` (\n  `id` BIGINT,\n  `email` VARCHAR(255)\n);")
        );
        assert!(sql.contains(
            "(1, 'a@x'),\n(2, 'b@x');\nINSERT INTO `customers` (`id`, `email`) VALUES\n(3, NULL);"
        ));
    }

    #[test]
    fn a_short_row_is_refused_with_its_number() {
        let table: Table = serde_json::from_value(json!({
            "name": "t", "columns": ["a", "b"], "rows": [[1, 2], [3]]
        }))
        .unwrap();
        let error = table.validate().unwrap_err();
        assert_eq!(
            error.message(),
            "table `t`: row 2 has 1 values but the table has 2 columns"
        );
    }
}
