//! `{{var}}` templates: the subset of Twig/Mustache syntax shop mail templates use.

use serde_json::{Map, Value};
use stepwise_guest::{StepError, bail};

/// Replaces every `{{ name }}` (spaces inside the braces optional) with the variable's
/// value: strings as they are, `null` as nothing, other values as JSON. A variable that
/// is not in `vars` is an error that names it.
pub fn render(template: &str, vars: &Map<String, Value>) -> Result<String, StepError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!(
                "`{{{{` without a closing `}}}}` near `{}`",
                preview(&rest[start..])
            );
        };
        let name = after[..end].trim();
        match vars.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) => {}
            Some(other) => out.push_str(&other.to_string()),
            None => bail!("unknown variable `{name}`"),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn preview(text: &str) -> String {
    text.chars().take(20).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Map<String, Value> {
        json!({"name": "Ann", "total": 12.5, "note": null})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn substitutes_with_and_without_spaces() {
        let text = render("Hi {{name}}, you owe {{ total }}.{{note}}", &vars()).unwrap();
        assert_eq!(text, "Hi Ann, you owe 12.5.");
    }

    #[test]
    fn an_unknown_variable_is_named() {
        let error = render("Your code: {{ coupon }}", &vars()).unwrap_err();
        assert_eq!(error.message(), "unknown variable `coupon`");
    }

    #[test]
    fn an_unclosed_tag_is_an_error() {
        let error = render("Hi {{name", &vars()).unwrap_err();
        assert_eq!(error.message(), "`{{` without a closing `}}` near `{{name`");
    }
}
