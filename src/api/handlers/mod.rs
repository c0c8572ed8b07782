//! Route handlers: one function per operation, each taking the API state and the typed parts of
//! the request it uses (a path value, the [`Query`], the [`Body`](super::request::Body), or the
//! whole [`Request`](super::request::Request) for capture URLs). Which handler serves which
//! route is written in the route's row of the table (`api/routes.rs`), not here.

pub(crate) mod dead_letters;
pub(crate) mod health;
pub(crate) mod receivers;
pub(crate) mod sessions;
pub(crate) mod stats;
pub(crate) mod test_delivery;
pub(crate) mod webhooks;

use super::reply::Reply;
use super::request::Query;

/// `GET /openapi.json`: the document, built and written once.
pub(crate) fn openapi() -> Reply {
    Reply::raw(
        200,
        "application/json; charset=utf-8",
        super::openapi::served().to_vec(),
    )
}

/// The dashboard: one page, embedded in the binary, no external assets. It holds no data of its
/// own; it calls the API from the browser with the token the user enters.
pub(crate) fn dashboard() -> Reply {
    Reply::raw(
        200,
        "text/html; charset=utf-8",
        include_bytes!("../dashboard.html").to_vec(),
    )
    .with_header(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    )
    .with_header("X-Content-Type-Options", "nosniff")
    .with_header("Cache-Control", "no-store")
}

/// Parses `?limit=`: absent → `default`; not a positive whole number → 400; above `max` → `max`.
pub(crate) fn limit(query: &Query, default: usize, max: usize) -> Result<usize, Reply> {
    match query.get("limit") {
        None | Some("") => Ok(default),
        // Any positive whole number, however long, means at most `max`.
        Some(text)
            if text.bytes().all(|b| b.is_ascii_digit()) && text.bytes().any(|b| b != b'0') =>
        {
            Ok(text.parse::<usize>().map_or(max, |n| n.min(max)))
        }
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(Reply::error_message(
                400,
                "limit must be a positive whole number",
                format!("got {text:?}"),
            )),
        },
    }
}

/// Captured requests as a JSON array, newest first, each written as it was kept.
pub(crate) fn json_array<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}
