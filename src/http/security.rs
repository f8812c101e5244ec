//! Security headers on every response, and the dashboard's Content-Security-Policy.
//!
//! The dashboard is one page with one inline `<style>` and one inline `<script>`. Rather than
//! allow `'unsafe-inline'`, its policy names the SHA-256 of exactly those two blocks, computed
//! from the embedded page on first use, so an injected script or style never runs and editing
//! the page needs no hand-kept hash.

use std::sync::LazyLock;

use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The dashboard page, served as is.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// The policy of every response but the dashboard: JSON and text never need to load anything.
const API_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `'sha256-…'` of the text between `open` and the next `close` in `page`.
fn inline_hash(page: &str, open: &str, close: &str) -> Option<String> {
    let start = page.find(open)? + open.len();
    let end = start + page[start..].find(close)?;
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    Some(format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// The dashboard's policy: its own inline script and style, requests to its own origin only.
pub fn dashboard_policy(page: &str) -> String {
    // Without the block the source is 'none': a broken page, never a weaker policy.
    let none = || "'none'".to_owned();
    let script = inline_hash(page, "<script>", "</script>").unwrap_or_else(none);
    let style = inline_hash(page, "<style>", "</style>").unwrap_or_else(none);
    format!(
        "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
}

static DASHBOARD_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    HeaderValue::from_str(&dashboard_policy(DASHBOARD))
        .unwrap_or_else(|_| HeaderValue::from_static(API_POLICY))
});

/// `GET /dashboard`.
pub async fn dashboard() -> Response {
    let mut response = Html(DASHBOARD).into_response();
    response
        .headers_mut()
        .insert(CONTENT_SECURITY_POLICY, DASHBOARD_POLICY.clone());
    response
}

const HEADERS: [(HeaderName, &str); 3] = [
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (X_FRAME_OPTIONS, "DENY"),
    (REFERRER_POLICY, "no-referrer"),
];

/// Middleware: the fixed security headers on every response, and the API's policy on every
/// response that did not set its own.
pub async fn headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(API_POLICY));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_policy_hashes_its_only_inline_script_and_style() {
        // One block of each, and no inline handlers or style attributes: the hashes cover
        // everything the page runs.
        assert_eq!(DASHBOARD.matches("<script").count(), 1);
        assert_eq!(DASHBOARD.matches("<style").count(), 1);
        for forbidden in [
            " style=",
            " onclick=",
            " onload=",
            " onchange=",
            "javascript:",
        ] {
            assert!(!DASHBOARD.contains(forbidden), "{forbidden}");
        }
        let policy = dashboard_policy(DASHBOARD);
        assert_eq!(policy.matches("'sha256-").count(), 2, "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.starts_with("default-src 'none';"));
        // A changed script changes the hash.
        let edited = DASHBOARD.replacen("\"use strict\";", "\"use strict\"; alert(1);", 1);
        assert_ne!(dashboard_policy(&edited), policy);
    }

    #[test]
    fn a_page_without_inline_blocks_gets_none() {
        let policy = dashboard_policy("<p>hi</p>");
        assert!(
            policy.contains("script-src 'none'; style-src 'none'"),
            "{policy}"
        );
    }
}
