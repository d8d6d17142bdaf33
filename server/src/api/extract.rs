//! Request extractors that turn every rejection into the API's error shape:
//! a JSON body whose bad field is named by its path, and a query string.

use super::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body. Syntax errors are 400; a wrong type or an unknown field is 422
/// with `field` set to the JSON path (`steps[0].max_memory`).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(format!("the body is too large: {}", e.body_text()))
            } else {
                ApiError::BadRequest(e.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parse JSON, naming the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => {
            deserializer
                .end()
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            Ok(value)
        }
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                // serde_json files some type errors as syntax errors (`"status": 1`
                // where an enum is expected is "expected value"): when the body is
                // valid JSON, the fault is a field's, and its path is the answer.
                return match serde_json::from_slice::<serde_json::Value>(bytes) {
                    Ok(value) => Err(field_error::<T>(value)),
                    Err(_) => Err(ApiError::BadRequest(format!(
                        "the body is not valid JSON: {inner}"
                    ))),
                };
            }
            Err(invalid(path, &inner))
        }
    }
}

/// The field-level error of a body that is valid JSON but not a `T`, found by
/// deserializing it again from the parsed value (whose type errors say what
/// was expected).
fn field_error<T: DeserializeOwned>(value: serde_json::Value) -> ApiError {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Err(error) => {
            let path = error.path().to_string();
            invalid(path, error.inner())
        }
        Ok(_) => ApiError::Invalid {
            field: None,
            message: "the body does not have the expected shape".into(),
        },
    }
}

fn invalid(path: String, error: &serde_json::Error) -> ApiError {
    ApiError::Invalid {
        field: (path != ".").then_some(path),
        message: strip_position(&error.to_string()),
    }
}

/// serde_json appends " at line 1 column 12": noise for a field-level error.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// A query string; a bad parameter is 422 naming it.
pub struct QueryArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryArgs)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::Invalid {
                    field: (path != ".").then_some(path),
                    message: format!("bad query parameter: {}", e.into_inner()),
                }
            })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// Path parameters; one that cannot be parsed (an id that is not a number, or
/// out of range) names no resource, so it is a JSON 404 like any missing one.
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathArgs(value)),
            Err(rejection) => Err(ApiError::NotFound(format!(
                "no such resource at {}: {}",
                parts.uri.path(),
                rejection.body_text()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Color {
        Red,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        color: Color,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }

    #[test]
    fn a_wrong_type_in_valid_json_is_a_field_error_not_a_syntax_error() {
        let body = br#"{"items": [{"color": "red"}, {"color": 1}]}"#;
        // What this guards against: serde_json calls this a syntax error.
        assert!(
            serde_json::from_slice::<Body>(body)
                .unwrap_err()
                .is_syntax()
        );
        match parse_json::<Body>(body) {
            Err(ApiError::Invalid { field, message }) => {
                assert_eq!(field.as_deref(), Some("items[1].color"));
                assert!(message.contains("integer `1`"), "{message}");
            }
            other => panic!("expected a field error, got {other:?}"),
        }
        // Broken JSON stays a 400.
        assert!(matches!(
            parse_json::<Body>(br#"{"items": [{"color": 1}"#),
            Err(ApiError::BadRequest(_))
        ));
    }
}
