//! Rhubarb's full-focus page: `/focus/{id}`, one task's live progress, for a
//! host application (a shop's admin) to link to or embed in an iframe, and
//! the page that sends the browser back there when the task's run ends.
//!
//! It is a page of its own rather than a route of the dashboard (`#/…`): a
//! hash route is one document for the server, which could then not let the
//! focus page be framed while refusing frames to the rest of the dashboard.
//! Here the server decides per page: this one may be framed by the embed
//! origins (`--embed-origin`), the dashboard by nobody (see `web.rs`).
//!
//! The redirect is checked here, before the page is served: a path on this
//! server, or a URL on an embed origin — never anywhere else (an open
//! redirect would let anyone dress a phishing link in this server's name).
//! The page reads the checked URL from the HTML, not from the address bar.
//!
//! The token travels in the fragment (`#token=…`), which browsers never send
//! to a server nor put in a `Referer`; a `?token=` is refused.

use super::AppState;
use super::error::{ApiError, Result};
use super::extract::{PathArgs, QueryArgs};
use super::web;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/focus/{id}", get(focus_page))
}

/// Longest redirect URL accepted.
const MAX_REDIRECT: usize = 2000;

/// Where the page sends the browser when the run ends.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedirectTarget {
    /// The whole window, even when the page is in a frame (default).
    #[default]
    Top,
    /// Only the frame the page is in.
    Frame,
}

impl RedirectTarget {
    fn as_str(self) -> &'static str {
        match self {
            RedirectTarget::Top => "top",
            RedirectTarget::Frame => "frame",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FocusQuery {
    /// Where to go when the task's run ends: a path on this server (`/…`)
    /// or a URL on an embed origin (`--embed-origin`). None: stay.
    pub redirect: Option<String>,
    /// `top` (default) or `frame`.
    pub target: Option<RedirectTarget>,
    /// Refused: a token belongs in the fragment (`#token=…`).
    pub token: Option<String>,
}

/// An embed origin from the settings, as browsers write origins:
/// `https://shop.example` or `http://localhost:8080`. Errors say what is wrong.
pub fn parse_embed_origin(text: &str) -> std::result::Result<String, String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("`{text}` is not an origin like https://shop.example: {e}"))?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || !bare {
        return Err(format!(
            "`{text}` is not an origin like https://shop.example: give the scheme, the host and the port only"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{text}` must not carry a user name or password"));
    }
    Ok(url.origin().ascii_serialization())
}

/// The redirect if it goes to this server (a path) or an embed origin.
fn checked_redirect(redirect: &str, embed_origins: &[String]) -> Result<()> {
    let refuse = |why: &str| ApiError::invalid("redirect", why.to_string());
    if redirect.len() > MAX_REDIRECT {
        return Err(refuse(&format!(
            "must be at most {MAX_REDIRECT} characters"
        )));
    }
    if redirect
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(refuse(
            "must not contain spaces or control characters; percent-encode them",
        ));
    }
    // `//host` and `/\host` leave the server: browsers read both as another host.
    if let Some(path) = redirect.strip_prefix('/') {
        if path.starts_with('/') || path.starts_with('\\') {
            return Err(refuse("a path must start with a single `/`"));
        }
        return Ok(());
    }
    let url = url::Url::parse(redirect)
        .map_err(|_| refuse("must be a path on this server (`/…`) or an absolute http(s) URL"))?;
    let origin = url.origin().ascii_serialization();
    if matches!(url.scheme(), "http" | "https") && embed_origins.contains(&origin) {
        Ok(())
    } else {
        Err(refuse(&format!(
            "`{origin}` is not an embed origin of this server; redirects go to a path on this server or to an origin given with --embed-origin"
        )))
    }
}

/// `&`, `<`, `>` and quotes escaped, for an HTML attribute value.
fn attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who may frame the page: this server and the embed origins.
fn frame_ancestors(embed_origins: &[String]) -> String {
    let mut policy = String::from("frame-ancestors 'self'");
    for origin in embed_origins {
        policy.push(' ');
        policy.push_str(origin);
    }
    policy
}

#[utoipa::path(get, path = "/focus/{id}", tag = "pages",
    description = "An HTML page showing one task's live progress, for a host application to link to or frame; \
        it redirects when the task's run ends. Give it a viewer token in the fragment: `#token=sw_…`.",
    params(("id" = i64, Path), FocusQuery),
    responses((status = 200, description = "the page", content_type = "text/html"),
        (status = 422, body = super::ErrorBody)))]
pub async fn focus_page(
    State(state): State<AppState>,
    PathArgs(id): PathArgs<i64>,
    QueryArgs(query): QueryArgs<FocusQuery>,
) -> Result<Response> {
    if id < 1 {
        return Err(ApiError::invalid("id", "must be a task id (1 or more)"));
    }
    if query.token.is_some() {
        return Err(ApiError::invalid(
            "token",
            "put the token in the fragment (`/focus/{id}#token=sw_…`), not the query: a query reaches server logs and Referer headers",
        ));
    }
    let origins = &state.config().embed_origins;
    let redirect = query.redirect.unwrap_or_default();
    if !redirect.is_empty() {
        checked_redirect(&redirect, origins)?;
    }
    let template = web::page("focus.html").ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "focus.html is missing from the embedded dashboard"
        ))
    })?;
    let html = String::from_utf8_lossy(template)
        .replace("{{task_id}}", &id.to_string())
        .replace("{{redirect}}", &attribute(&redirect))
        .replace("{{target}}", query.target.unwrap_or_default().as_str());
    let policy = HeaderValue::from_str(&frame_ancestors(origins))
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (CONTENT_SECURITY_POLICY, policy),
        ],
        html,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_this_server_or_an_embed_origin() {
        let origins = vec!["https://shop.example".to_string()];
        for fine in [
            "/",
            "/#/tasks",
            "/healthz?x=1",
            "https://shop.example/admin?a=b",
        ] {
            assert!(checked_redirect(fine, &origins).is_ok(), "{fine}");
        }
        for refused in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "https://shop.example.evil.example/",
            "https://shop.example@evil.example/",
            "http://shop.example/",
            "javascript:alert(1)",
            "admin",
            "/a b",
        ] {
            let error = checked_redirect(refused, &origins).unwrap_err();
            assert!(error.to_string().len() > 10, "{refused}: {error}");
        }
    }

    #[test]
    fn embed_origins_are_bare_origins() {
        assert_eq!(
            parse_embed_origin("https://Shop.Example/").as_deref(),
            Ok("https://shop.example")
        );
        assert_eq!(
            parse_embed_origin("http://localhost:8080").as_deref(),
            Ok("http://localhost:8080")
        );
        for bad in [
            "shop.example",
            "https://shop.example/admin",
            "ftp://x",
            "https://u:p@x",
        ] {
            assert!(parse_embed_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attribute_values_cannot_break_out() {
        assert_eq!(
            attribute("\"><script>'&"),
            "&quot;&gt;&lt;script&gt;&#39;&amp;"
        );
    }
}
