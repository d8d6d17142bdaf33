//! A module's metadata (title, description, version, settings schema): read
//! from its `stepwise:metadata` custom section or given beside the upload,
//! checked once at upload, and the settings schema compiled for the checks
//! at task create and step edit.
//!
//! The schema must be self-contained: the validator is built without remote
//! or file `$ref` resolution, so a schema that points elsewhere is refused
//! at upload rather than fetched from a step-create request.

use super::error::ApiError;
use crate::store::ModuleMetadata;
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde_json::Value;
use std::fmt::Write;

/// Most bytes of metadata JSON (a schema is a page or two; this is a bound,
/// not a budget).
pub const MAX_METADATA_BYTES: usize = 256 << 10;

/// The metadata an upload carries: `given` (the `metadata` query parameter,
/// or a `.metadata.json` file beside a module in `--modules-dir`) wins over
/// the component's own section, so modules from toolchains that cannot write
/// a custom section can have one too. `None` when neither says anything.
pub fn read(bytes: &[u8], given: Option<&[u8]>) -> Result<Option<ModuleMetadata>, ApiError> {
    let (text, field) = match given {
        Some(text) => (text.to_vec(), "metadata"),
        None => match crate::runtime::metadata_section(bytes) {
            Some(text) => (text, "body"),
            None => return Ok(None),
        },
    };
    let from = if field == "body" {
        format!(
            "the component's `{}` section",
            crate::runtime::METADATA_SECTION
        )
    } else {
        "the metadata".to_string()
    };
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(
            field,
            format!(
                "{from} is {} bytes; at most {MAX_METADATA_BYTES} are allowed",
                text.len()
            ),
        ));
    }
    let metadata: ModuleMetadata = serde_json::from_slice(&text).map_err(|e| {
        ApiError::invalid(
            field,
            format!(
                "{from} is not valid metadata JSON ({e}); expected an object with the optional keys title, description, version and settings_schema"
            ),
        )
    })?;
    check(&metadata).map_err(|message| ApiError::invalid(field, format!("{from}: {message}")))?;
    Ok(Some(metadata))
}

/// The limits on each key, and that the schema compiles.
fn check(metadata: &ModuleMetadata) -> Result<(), String> {
    let texts = [
        ("title", &metadata.title, 200),
        ("description", &metadata.description, 4000),
        ("version", &metadata.version, 64),
    ];
    for (key, value, max) in texts {
        if let Some(value) = value
            && value.chars().count() > max
        {
            return Err(format!("`{key}` must be at most {max} characters"));
        }
    }
    if let Some(schema) = &metadata.settings_schema {
        SettingsSchema::compile(&schema.value())?;
    }
    Ok(())
}

/// A compiled settings schema.
#[derive(Debug)]
pub struct SettingsSchema {
    validator: jsonschema::Validator,
}

impl SettingsSchema {
    /// Compile `schema`; the error says why it is not a usable JSON Schema.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err("`settings_schema` must be a JSON Schema object".into());
        }
        jsonschema::validator_for(schema)
            .map(|validator| SettingsSchema { validator })
            .map_err(|e| format!("`settings_schema` is not a valid JSON Schema: {e}"))
    }

    /// Check a step's settings. The error names the field at fault below
    /// `field` (`steps[0].settings.recipients[1].email`); a missing required
    /// property is named itself, not its parent object.
    pub fn check(&self, field: &str, settings: &Value) -> Result<(), ApiError> {
        let Some(error) = self.validator.iter_errors(settings).next() else {
            return Ok(());
        };
        let mut path = field.to_string();
        for segment in error.instance_path().segments() {
            match segment {
                LocationSegment::Property(name) => {
                    let _ = write!(path, ".{name}");
                }
                LocationSegment::Index(index) => {
                    let _ = write!(path, "[{index}]");
                }
            }
        }
        if let ValidationErrorKind::Required { property } = error.kind()
            && let Some(name) = property.as_str()
        {
            let _ = write!(path, ".{name}");
            return Err(ApiError::invalid(
                path,
                "is required by the module's settings schema",
            ));
        }
        Err(ApiError::invalid(path, error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_and_message(error: ApiError) -> (String, String) {
        match error {
            ApiError::Invalid {
                field: Some(field),
                message,
            } => (field, message),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let schema = SettingsSchema::compile(&json!({
            "type": "object",
            "required": ["recipients"],
            "properties": {
                "recipients": {"type": "array", "items": {"type": "string"}},
                "level": {"enum": ["low", "high"]}
            }
        }))
        .expect("a valid schema");
        assert!(
            schema
                .check("settings", &json!({"recipients": ["a"]}))
                .is_ok()
        );
        let (field, message) = field_and_message(
            schema
                .check("steps[0].settings", &json!({"recipients": "x"}))
                .unwrap_err(),
        );
        assert_eq!(field, "steps[0].settings.recipients");
        assert!(message.contains("is not of type \"array\""), "{message}");
        let (field, _) = field_and_message(
            schema
                .check("settings", &json!({"recipients": ["a", 2]}))
                .unwrap_err(),
        );
        assert_eq!(field, "settings.recipients[1]");
        let (field, message) = field_and_message(schema.check("settings", &json!({})).unwrap_err());
        assert_eq!(field, "settings.recipients");
        assert!(message.contains("required"), "{message}");
    }

    #[test]
    fn bad_metadata_is_refused_with_the_reason() {
        let bad = |text: &str| field_and_message(read(b"", Some(text.as_bytes())).unwrap_err());
        assert_eq!(bad("[1]").0, "metadata");
        assert!(bad(r#"{"titel": "x"}"#).1.contains("titel"));
        assert!(
            bad(r#"{"settings_schema": {"type": "no-such-type"}}"#)
                .1
                .contains("not a valid JSON Schema")
        );
        assert!(bad(r#"{"settings_schema": 3}"#).1.contains("object"));
        assert!(
            bad(r#"{"settings_schema": {"$ref": "https://example.com/s.json"}}"#)
                .1
                .contains("not a valid JSON Schema"),
            "remote references are not fetched"
        );
        let ok = read(
            b"",
            Some(br#"{"title": "T", "settings_schema": {"type": "object"}}"#),
        )
        .expect("valid")
        .expect("some");
        assert_eq!(ok.title.as_deref(), Some("T"));
        assert_eq!(read(b"\0asm\x0d\0\x01\0", None).expect("none"), None);
    }
}
